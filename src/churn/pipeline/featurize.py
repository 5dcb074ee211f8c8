"""featurize: fit the preprocessing on the train split only and transform both splits.

in: data/prepared/*.parquet | out: data/features/*.parquet, models/preprocessor.pkl | params: data, featurize
"""

from __future__ import annotations

from churn.config import Params
from churn.core.features import build_preprocessor, transform
from churn.pipeline import entry
from churn.pipeline.batches import stored_rows, streams
from churn.pipeline.files import StagedOutputs, read_parquet, write_parquet, write_pickle
from churn.pipeline.paths import FEATURES_TEST as TEST
from churn.pipeline.paths import FEATURES_TRAIN as TRAIN
from churn.pipeline.paths import PREPARED_TEST, PREPARED_TRAIN, PREPROCESSOR
from churn.tracking.runs import stage_run


def run(params: Params) -> None:
    if streams(stored_rows(PREPARED_TRAIN, PREPARED_TEST), params.resources):  # the large-data path
        from churn.pipeline.large import featurize

        return featurize.run(params)
    data = params.data
    with StagedOutputs("featurize") as out:
        with stage_run("featurize", params.mlflow, [PREPARED_TRAIN, PREPARED_TEST]) as run:
            run.log_params({"featurize": params.featurize.model_dump()})
            train = read_parquet(PREPARED_TRAIN)
            test = read_parquet(PREPARED_TEST)
            preprocessor = build_preprocessor(data, params.featurize).fit(train)
            features_train = transform(preprocessor, train).assign(**{data.target: train[data.target].to_numpy()})
            features_test = transform(preprocessor, test).assign(**{data.target: test[data.target].to_numpy()})

            staged = {str(p): out.path(p) for p in (TRAIN, TEST, PREPROCESSOR)}
            write_parquet(features_train, staged[str(TRAIN)])
            write_parquet(features_test, staged[str(TEST)])
            write_pickle(preprocessor, staged[str(PREPROCESSOR)])
            run.log_metrics({"n_features": features_train.shape[1] - 1}, prefix="featurize.")
            run.log_artifact(staged[str(PREPROCESSOR)], "preprocessor")
            run.record_outputs(staged)
        out.publish()


if __name__ == "__main__":
    entry(run)
