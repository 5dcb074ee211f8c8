"""prepare, streaming: the raw CSV validated, cleaned and split record batch by record batch.

The split is the default path's (churn.core.split: a keyed hash of each row's ids), applied batch by batch:
the same rows on the same sides whatever the batch size. Repeats are found through hashes of the rows' features
and target (8 bytes per distinct row), and test rows identical to a train row through the same hashes kept per
side (8 more bytes per row).

in: data.raw_path | out: data/prepared/{train,test}.parquet; metrics reports/data_quality.json
params: data, prepare, resources.batch_rows
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core import quality
from churn.core.batch_cleaning import CleanBatches
from churn.core.split import Sides, identity, row_keys
from churn.core.streaming import SeenKeys
from churn.pipeline.batches import BatchWriter, iter_raw, prepared_schema
from churn.pipeline.files import StagedOutputs, write_json
from churn.pipeline.paths import DATA_QUALITY
from churn.pipeline.paths import PREPARED_TEST as TEST
from churn.pipeline.paths import PREPARED_TRAIN as TRAIN
from churn.tracking.runs import stage_run

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    data, settings, raw_path = params.data, params.prepare, Path(params.data.raw_path)
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
        sides = Sides(data, settings, str(raw_path))
        duplicates = dropped = 0
        schema = prepared_schema(data)
        with BatchWriter(staged[str(TRAIN)], schema) as train, BatchWriter(staged[str(TEST)], schema) as test:
            for raw in iter_raw(raw_path, data, params.resources.batch_rows):
                clean = cleaner.clean(raw)
                keys = row_keys(clean[identity(data)], settings.seed)
                first = seen.first_seen(keys)
                duplicates += int((~first).sum())
                if settings.drop_duplicates:
                    dropped += int((~first).sum())
                    clean, keys = clean.loc[first].reset_index(drop=True), keys[first]
                for writer, part in zip((train, test), sides.split(clean, keys), strict=True):
                    writer.write(part)
            cleaner.finish()
        labels = cleaner.labels()
        sides.check(labels)
        counted = sides.rows, sides.positives, sides.test_rows_in_train()
        report = quality.report(cleaner.rows, cleaner.unlabeled, duplicates, dropped, *counted, labels)
        for line in quality.warnings(report, data.target, settings.warn_share, settings.drop_duplicates):
            log.warning("%s: %s", raw_path, line)
        write_json(report, staged[str(DATA_QUALITY)])
        run.log_metrics(quality.metrics(report, data.positive_label), prefix="prepare.")
        run.record_outputs(staged)
        out.publish()
