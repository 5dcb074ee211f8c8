"""prepare: validate the raw table against the declared schema, clean it, split it (stratified, seeded).

in: data.raw_path | out: data/prepared/train.parquet, data/prepared/test.parquet | params: data, prepare
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from churn.data import read_raw, split, validate_and_clean
from churn.io import StagedOutputs, write_parquet
from churn.layout import PREPARED_TEST as TEST
from churn.layout import PREPARED_TRAIN as TRAIN
from churn.params import Params
from churn.stages import entry
from churn.timing import timed
from churn.tracking import stage_run


def run(params: Params) -> None:
    data = params.data
    raw_path = Path(data.raw_path)
    with StagedOutputs("prepare") as out:
        with stage_run("prepare", params.mlflow, [raw_path] if raw_path.exists() else []) as run:
            run.log_params({"data": asdict(data), "prepare": asdict(params.prepare)})
            raw = read_raw(raw_path, data)
            clean = validate_and_clean(raw, data, str(raw_path))
            train, test = split(clean, data.target, params.prepare.test_size, params.prepare.seed)

            staged = {str(TRAIN): out.path(TRAIN), str(TEST): out.path(TEST)}
            write_parquet(train, staged[str(TRAIN)])
            write_parquet(test, staged[str(TEST)])
            run.log_metrics(
                {
                    "rows_raw": len(raw),
                    "rows_train": len(train),
                    "rows_test": len(test),
                    "positive_rate": round(float(clean[data.target].mean()), 6),
                },
                prefix="prepare.",
            )
            run.record_outputs(staged)
            _log_datasets(raw, train, test, params, raw_path, {str(raw_path): run.data_md5, **run.output_md5})
        out.publish()


SCHEMA_ROWS = 1000


@timed("logging")
def _log_datasets(raw, train, test, params: Params, raw_path: Path, md5: dict[str, str]) -> None:
    """Log the three tables as MLflow datasets, with the exact file md5s (as in dvc.lock, `md5` by path;
    the raw file's is the run's data.md5) as digests.

    Passing the digest and inferring column types from the first rows keeps this cheap: MLflow's own
    digest and schema inference look at every value of every text column in Python (0.5 s at 20k rows,
    growing with the data). Whether a column may be missing is still decided on all rows."""
    import warnings

    target = params.data.target
    datasets = [
        (raw, "raw", "raw", str(raw_path), md5[str(raw_path)], None),
        (train, "prepared_train", "training", str(TRAIN), md5[str(TRAIN)], target),
        (test, "prepared_test", "testing", str(TEST), md5[str(TEST)], target),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the integer-schema hint: the target is 0/1 by design
        for frame, name, context, source, digest, targets in datasets:
            _log_dataset(frame, name, context, f"{source}@md5:{digest}", digest, targets)


def _log_dataset(frame, name: str, context: str, source: str, digest: str, targets: str | None) -> None:
    from functools import cached_property

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    class SampledSchemaDataset(PandasDataset):
        @cached_property
        def schema(self) -> Schema:
            inferred = infer_signature(self.df.head(SCHEMA_ROWS)).inputs
            missing = self.df.isna().any()
            return Schema([ColSpec(col.type, col.name, required=not missing[col.name]) for col in inferred.inputs])

    dataset = SampledSchemaDataset(
        frame, source=resolve_dataset_source(source), targets=targets, name=name, digest=digest
    )
    mlflow.log_input(dataset, context=context)


def main() -> None:
    entry(run)


if __name__ == "__main__":
    main()
