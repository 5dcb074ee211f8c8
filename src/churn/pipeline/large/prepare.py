"""prepare, streaming: the raw CSV validated, cleaned and split record batch by record batch.

A row goes to the test split when a seeded 64-bit hash of its features and target falls in the lowest
prepare.test_size share of the range: no whole table is needed, the split ignores batch sizes and row order,
every class is split in the same proportion, and identical rows always land on the same side (so no test row
repeats a train row). Repeats are found through the hashes (8 bytes per distinct row).

in: data.raw_path | out: data/prepared/{train,test}.parquet; metrics reports/data_quality.json
params: data, prepare, resources.batch_rows
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core import quality
from churn.core.batch_cleaning import CleanBatches
from churn.core.streaming import SeenKeys, in_test, split_keys
from churn.errors import DataError
from churn.pipeline.batches import BatchWriter, iter_raw, prepared_schema
from churn.pipeline.files import StagedOutputs, write_json
from churn.pipeline.paths import DATA_QUALITY
from churn.pipeline.paths import PREPARED_TEST as TEST
from churn.pipeline.paths import PREPARED_TRAIN as TRAIN
from churn.tracking.runs import stage_run

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    data, settings, raw_path = params.data, params.prepare, Path(params.data.raw_path)
    identity = [*data.features, data.target]  # what the model sees and is scored on
    with StagedOutputs("prepare") as out, stage_run("prepare", params.mlflow, [raw_path]) as run:
        run.log_params(
            {
                "data": data.model_dump(),
                "prepare": settings.model_dump(),
                "resources": {"batch_rows": params.resources.batch_rows},
            }
        )
        staged = {str(TRAIN): out.path(TRAIN), str(TEST): out.path(TEST), str(DATA_QUALITY): out.path(DATA_QUALITY)}
        cleaner, seen = CleanBatches(data, str(raw_path)), SeenKeys()
        duplicates = dropped = 0
        positives = {"train": 0, "test": 0}
        schema = prepared_schema(data)
        with BatchWriter(staged[str(TRAIN)], schema) as train, BatchWriter(staged[str(TEST)], schema) as test:
            for raw in iter_raw(raw_path, data, params.resources.batch_rows):
                clean = cleaner.clean(raw)
                keys = split_keys(clean[identity], settings.seed)
                first = seen.first_seen(keys)
                duplicates += int((~first).sum())
                if settings.drop_duplicates:
                    dropped += int((~first).sum())
                    clean, keys = clean.loc[first].reset_index(drop=True), keys[first]
                to_test = in_test(keys, settings.test_size)
                for side, writer, rows in (("train", train, ~to_test), ("test", test, to_test)):
                    part = clean.loc[rows].reset_index(drop=True)
                    positives[side] += int(part[data.target].sum())
                    writer.write(part)
            cleaner.finish()
        rows = {"train": train.rows, "test": test.rows}
        used = rows["train"] + rows["test"]
        if min(rows.values()) < 2 or min(positives.values()) < 1 or min(rows[s] - positives[s] for s in rows) < 1:
            raise DataError(
                "prepare", f"too few rows to split ({used} rows: {rows['train']} train, {rows['test']} test)"
            )
        negative, positive = cleaner.labels()
        all_positive = positives["train"] + positives["test"]
        report = {
            "rows_raw": cleaner.rows,
            "rows_blank_target": cleaner.unlabeled,
            "rows_duplicate": duplicates,
            "rows_duplicate_dropped": dropped,
            "rows_used": used,
            "test_rows_in_train": 0,  # identical rows share their hash, hence their side of the split
            "rows_test": rows["test"],
            "rows_per_label": {negative: used - all_positive, positive: all_positive},
        }
        for line in quality.warnings(report, data.target, settings.warn_share, settings.drop_duplicates):
            log.warning("%s: %s", raw_path, line)
        write_json(report, staged[str(DATA_QUALITY)])
        shares = {
            "test_share_positive": round(positives["test"] / max(all_positive, 1), 6),
            "test_share_negative": round((rows["test"] - positives["test"]) / max(used - all_positive, 1), 6),
        }
        log.info("test split: %.4f of the positive rows, %.4f of the negative", *shares.values())
        counts = {
            "rows_raw": cleaner.rows,
            "rows_train": rows["train"],
            "rows_test": rows["test"],
            "positive_rate": round(all_positive / used, 6),
            "rows_blank_target": cleaner.unlabeled,
            "rows_duplicate": duplicates,
            "rows_duplicate_dropped": dropped,
            "test_rows_in_train": 0,
            **shares,
        }
        run.log_metrics(counts, prefix="prepare.")
        run.record_outputs(staged)
        out.publish()
