"""prepare: validate the raw table against the declared schema, clean it, split it (stratified, seeded).

in: data.raw_path | out: data/prepared/train.parquet, data/prepared/test.parquet | params: data, prepare
"""

from __future__ import annotations

from pathlib import Path

from churn.config import Params
from churn.core.schema import split, validate_and_clean
from churn.pipeline import entry
from churn.pipeline.files import StagedOutputs, read_raw, write_parquet
from churn.pipeline.paths import PREPARED_TEST as TEST
from churn.pipeline.paths import PREPARED_TRAIN as TRAIN
from churn.tracking.runs import log_datasets, stage_run


def run(params: Params) -> None:
    data, raw_path = params.data, Path(params.data.raw_path)
    inputs = [raw_path] if raw_path.exists() else []
    with StagedOutputs("prepare") as out, stage_run("prepare", params.mlflow, inputs) as run:
        run.log_params({"data": data.model_dump(), "prepare": params.prepare.model_dump()})
        raw = read_raw(raw_path, data)
        clean = validate_and_clean(raw, data, str(raw_path))
        train, test = split(clean, data.target, params.prepare.test_size, params.prepare.seed)

        staged = {str(TRAIN): out.path(TRAIN), str(TEST): out.path(TEST)}
        write_parquet(train, staged[str(TRAIN)])
        write_parquet(test, staged[str(TEST)])
        positive_rate = round(float(clean[data.target].mean()), 6)
        counts = {
            "rows_raw": len(raw),
            "rows_train": len(train),
            "rows_test": len(test),
            "positive_rate": positive_rate,
        }
        run.log_metrics(counts, prefix="prepare.")
        run.record_outputs(staged)
        md5 = {str(raw_path): run.data_md5, **run.output_md5}
        log_datasets(
            [
                (raw, "raw", "raw", str(raw_path), md5[str(raw_path)], None),
                (train, "prepared_train", "training", str(TRAIN), md5[str(TRAIN)], data.target),
                (test, "prepared_test", "testing", str(TEST), md5[str(TEST)], data.target),
            ]
        )
        out.publish()


if __name__ == "__main__":
    entry(run)
