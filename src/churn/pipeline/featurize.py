"""featurize: fit the preprocessing on the train split only, from statistics gathered batch by batch (a split
smaller than resources.batch_rows is one batch, and gets what fitting on it whole gets, bit for bit), then
transform both splits batch by batch. The exact median may take one more pass over the numeric columns, the
scaler one more.

in: data/prepared/*.parquet | out: data/features/*.parquet, models/preprocessor.pkl
params: data, featurize, resources.batch_rows
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core.features import build_preprocessor, transform
from churn.core.streaming import NumericSummary, column_means, count_categories, exact_medians, fit_from_statistics
from churn.errors import DataError
from churn.pipeline import entry
from churn.storage.outputs import StagedOutputs, write_pickle
from churn.storage.parquet import BatchWriter, file_schema, iter_parquet
from churn.storage.paths import FEATURES_TEST, FEATURES_TRAIN, PREPARED_TEST, PREPARED_TRAIN, PREPROCESSOR
from churn.tracking.runs import stage_run

log = logging.getLogger(__name__)


def fit(params: Params, path: Path = PREPARED_TRAIN):
    """The preprocessor fitted on the whole file at `path`, from statistics gathered batch by batch."""
    data, batch_rows = params.data, params.resources.batch_rows
    numerical = list(data.numerical)
    means = params.featurize.numeric_impute == "mean"
    numeric = {c: NumericSummary() for c in numerical}
    categories: dict[str, dict[str, int]] = {}
    rows = 0
    for frame in iter_parquet(path, batch_rows, [*numerical, *data.categorical], data.categorical):
        rows += len(frame)
        batch_means = column_means(frame, numerical) if means and numerical else {}
        for name, summary in numeric.items():
            summary.update(frame[name].to_numpy(), batch_means.get(name))
        count_categories(frame, data.categorical, categories)
    if not rows:
        raise DataError(str(path), "no rows; run prepare first (dvc repro)")

    def numeric_batches():
        return iter_parquet(path, batch_rows, numerical)

    if means:
        fills = {name: summary.mean for name, summary in numeric.items()}
    else:
        fills = exact_medians(numeric, numeric_batches)
    template = file_schema(path).empty_table().to_pandas()  # the split's columns and types: what the fit sees
    return fit_from_statistics(build_preprocessor(data, params.featurize), template, fills, categories, numeric_batches)


def transform_file(params: Params, preprocessor, source: Path, dest: Path) -> int:
    """Transform `source` into `dest` batch by batch; returns the number of feature columns."""
    width, target, categorical = 0, params.data.target, params.data.categorical
    with BatchWriter(dest) as writer:
        for frame in iter_parquet(source, params.resources.batch_rows, categories=categorical):
            features = transform(preprocessor, frame)
            width = features.shape[1]
            writer.write(features.assign(**{target: frame[target].to_numpy()}))
    return width


def run(params: Params) -> None:
    with StagedOutputs("featurize") as out:
        with stage_run("featurize", params.mlflow, [PREPARED_TRAIN, PREPARED_TEST]) as run:
            run.log_params({"featurize": params.featurize.model_dump()})
            preprocessor = fit(params)
            staged = {str(p): out.path(p) for p in (FEATURES_TRAIN, FEATURES_TEST, PREPROCESSOR)}
            width = transform_file(params, preprocessor, PREPARED_TRAIN, staged[str(FEATURES_TRAIN)])
            transform_file(params, preprocessor, PREPARED_TEST, staged[str(FEATURES_TEST)])
            write_pickle(preprocessor, staged[str(PREPROCESSOR)])
            run.log_metrics({"n_features": width}, prefix="featurize.")
            run.log_artifact(staged[str(PREPROCESSOR)], "preprocessor")
            run.record_outputs(staged)
        out.publish()


if __name__ == "__main__":
    entry(run)
