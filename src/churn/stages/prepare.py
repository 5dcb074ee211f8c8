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
            _log_datasets(raw, train, test, params, raw_path)
            run.record_outputs(staged)
        out.publish()


@timed("logging")
def _log_datasets(raw, train, test, params: Params, raw_path: Path) -> None:
    import warnings

    import mlflow

    from churn.io import file_md5

    target = params.data.target
    sample = 100_000  # MLflow profiles and hashes a sample; the md5 tags pin the exact bytes
    source = f"{raw_path}@md5:{file_md5(raw_path)}"
    datasets = [
        (raw, "raw", "raw", source, None),
        (train, "prepared_train", "training", str(TRAIN), target),
        (test, "prepared_test", "testing", str(TEST), target),
    ]
    for frame, name, context, src, targets in datasets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the integer-schema hint: the target is 0/1 by design
            dataset = mlflow.data.from_pandas(frame.head(sample), source=src, name=name, targets=targets)
            mlflow.log_input(dataset, context=context)


def main() -> None:
    entry(run)


if __name__ == "__main__":
    main()
