"""prepare: validate the raw table against the declared schema, clean it, drop repeated rows (by default), split
it by a keyed hash of each row's ids (churn.core.split), and count what the data-quality report shows.

in: data.raw_path | out: data/prepared/{train,test}.parquet; metrics reports/data_quality.json | params: data, prepare
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core import quality
from churn.core.schema import target_labels, validate_and_clean
from churn.core.split import Sides, identity
from churn.pipeline import entry
from churn.pipeline.batches import csv_rows_above
from churn.pipeline.files import StagedOutputs, read_raw, write_json, write_parquet
from churn.pipeline.paths import DATA_QUALITY
from churn.pipeline.paths import PREPARED_TEST as TEST
from churn.pipeline.paths import PREPARED_TRAIN as TRAIN
from churn.tracking.runs import log_datasets, stage_run

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    if csv_rows_above(Path(params.data.raw_path), params.data, params.resources.streaming_rows):  # large data
        from churn.pipeline.large import prepare

        return prepare.run(params)
    data, settings, raw_path = params.data, params.prepare, Path(params.data.raw_path)
    inputs = [raw_path] if raw_path.exists() else []
    with StagedOutputs("prepare") as out, stage_run("prepare", params.mlflow, inputs) as run:
        run.log_params({"data": data.model_dump(), "prepare": settings.model_dump()})
        raw = read_raw(raw_path, data)
        clean = validate_and_clean(raw, data, str(raw_path))  # rows with a blank target dropped
        labels, blank = target_labels(raw[data.target], data, str(raw_path)), len(raw) - len(clean)
        repeats = quality.duplicated(clean, identity(data))
        duplicates, dropped = int(repeats.sum()), int(repeats.sum()) if settings.drop_duplicates else 0
        if dropped:
            clean = clean.loc[~repeats.to_numpy()].reset_index(drop=True)
        sides = Sides(data, settings, str(raw_path))
        train, test = sides.split(clean)
        sides.check(labels)
        counted = sides.rows, sides.positives, sides.test_rows_in_train()
        report = quality.report(len(raw), blank, duplicates, dropped, *counted, labels)
        for line in quality.warnings(report, data.target, settings.warn_share, settings.drop_duplicates):
            log.warning("%s: %s", raw_path, line)

        staged = {str(TRAIN): out.path(TRAIN), str(TEST): out.path(TEST), str(DATA_QUALITY): out.path(DATA_QUALITY)}
        write_parquet(train, staged[str(TRAIN)])
        write_parquet(test, staged[str(TEST)])
        write_json(report, staged[str(DATA_QUALITY)])
        run.log_metrics(quality.metrics(report, data.positive_label), prefix="prepare.")
        run.record_outputs(staged)
        md5 = {str(raw_path): run.data_md5, **run.output_md5}
        log_datasets(
            run,
            [
                (raw, "raw", "raw", str(raw_path), md5[str(raw_path)], None),
                (train, "prepared_train", "training", str(TRAIN), md5[str(TRAIN)], data.target),
                (test, "prepared_test", "testing", str(TEST), md5[str(TEST)], data.target),
            ],
        )
        out.publish()


if __name__ == "__main__":
    entry(run)
