"""prepare: the raw table read, validated and cleaned batch by batch (resources.batch_rows rows at a time; a
smaller table is one batch), repeated rows dropped (by default), each row split by a keyed hash of its ids
(churn.core.split), and what the data-quality report shows counted. Repeats are found through 64-bit hashes of
the rows' features and target (8 bytes per distinct row), and test rows identical to a train row through the
same hashes kept per side: the same rows on the same sides, the same report, whatever the batch size.

in: data.raw_path | out: data/prepared/{train,test}.parquet; metrics reports/data_quality.json
params: data, prepare, resources.batch_rows
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core import quality
from churn.core.schema import CleanBatches
from churn.core.split import Sides, identity, row_keys
from churn.core.streaming import SeenKeys
from churn.pipeline import entry
from churn.storage.csv_reader import iter_raw
from churn.storage.outputs import StagedOutputs, write_json
from churn.storage.parquet import BatchWriter, prepared_schema
from churn.storage.paths import DATA_QUALITY
from churn.storage.paths import PREPARED_TEST as TEST
from churn.storage.paths import PREPARED_TRAIN as TRAIN
from churn.tracking.runs import log_datasets, stage_run

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    data, settings, raw_path = params.data, params.prepare, Path(params.data.raw_path)
    inputs = [raw_path] if raw_path.exists() else []  # a missing file: iter_raw's one line, in the run
    with StagedOutputs("prepare") as out, stage_run("prepare", params.mlflow, inputs) as run:
        run.log_params({"data": data.model_dump(), "prepare": settings.model_dump()})
        staged = {str(TRAIN): out.path(TRAIN), str(TEST): out.path(TEST), str(DATA_QUALITY): out.path(DATA_QUALITY)}
        cleaner, seen = CleanBatches(data, str(raw_path)), SeenKeys()
        sides = Sides(data, settings, str(raw_path))
        duplicates = dropped = 0
        first: dict[str, object] = {}  # each table's first batch: the schema of the datasets logged to MLflow
        schema = prepared_schema(data)
        with BatchWriter(staged[str(TRAIN)], schema) as train, BatchWriter(staged[str(TEST)], schema) as test:
            for raw in iter_raw(raw_path, data, params.resources.batch_rows):
                clean = cleaner.clean(raw)
                keys = row_keys(clean[identity(data)], settings.seed)
                unseen = seen.first_seen(keys)
                duplicates += int((~unseen).sum())
                if settings.drop_duplicates and not unseen.all():
                    dropped += int((~unseen).sum())
                    clean, keys = clean.loc[unseen].reset_index(drop=True), keys[unseen]
                parts = sides.split(clean, keys)
                for writer, part in zip((train, test), parts, strict=True):
                    writer.write(part)
                first = first or {"raw": raw, "train": parts[0], "test": parts[1]}
        log.info("read %s: %d rows", raw_path, cleaner.rows)
        labels = cleaner.finish()
        sides.check(labels)
        counted = sides.rows, sides.positives, sides.test_rows_in_train()
        report = quality.report(cleaner.rows, cleaner.unlabeled, duplicates, dropped, *counted, labels)
        for line in quality.warnings(report, data.target, settings.warn_share, settings.drop_duplicates):
            log.warning("%s: %s", raw_path, line)
        write_json(report, staged[str(DATA_QUALITY)])
        run.log_metrics(quality.metrics(report, data.positive_label), prefix="prepare.")
        run.record_outputs(staged)
        md5 = {str(raw_path): run.data_md5, **run.output_md5}
        log_datasets(
            run,
            [
                (first["raw"], "raw", "raw", str(raw_path), md5[str(raw_path)], None, cleaner.rows),
                (first["train"], "prepared_train", "training", str(TRAIN), md5[str(TRAIN)], data.target, train.rows),
                (first["test"], "prepared_test", "testing", str(TEST), md5[str(TEST)], data.target, test.rows),
            ],
        )
        out.publish()


if __name__ == "__main__":
    entry(run)
