"""register: log the full inference pipeline (raw columns in, churn probability out) and, when it passes
the validation gate and differs from every existing version, register it and move the aliases.

in: models/*.pkl, reports/{metrics,slices,data_quality}.json, data/prepared/{train,test}.parquet,
data/features/train.parquet
out: reports/register.json, reports/model_card.md
params: register, evaluate.primary_metric, data, model.type, resources.batch_rows (the train split's profile,
carried in the model's metadata for drift checks, is made batch by batch)
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.core.card import model_card
from churn.core.drift import make_profile
from churn.core.explain import column_means
from churn.core.models import inference_pipeline
from churn.core.quality import labels_of
from churn.pipeline import entry
from churn.storage.outputs import StagedOutputs, read_json, read_pickle, write_json
from churn.storage.parquet import iter_parquet
from churn.storage.paths import (
    DATA_QUALITY,
    DECISION,
    FEATURES_TRAIN,
    METRICS,
    MODEL,
    MODEL_CARD,
    PREPARED_TEST,
    PREPARED_TRAIN,
    PREPROCESSOR,
    SLICES,
)
from churn.timing import phase
from churn.tracking.models import (
    TEST_DATASET,
    describe,
    lineage_tags,
    log_pipeline,
    model_md5,
    raw_signature,
    test_dataset,
    with_serving,
)
from churn.tracking.registry import Candidate, failures, gate, register
from churn.tracking.runs import stage_run
from churn.tracking.store import store_lock

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    data, settings = params.data, params.register
    with StagedOutputs("register") as out:
        inputs = [MODEL, PREPROCESSOR, METRICS, PREPARED_TRAIN, PREPARED_TEST, FEATURES_TRAIN]
        with stage_run("register", params.mlflow, inputs) as run:
            run.log_params({"register": settings.model_dump(exclude_none=True)})
            pipeline = inference_pipeline(read_pickle(PREPROCESSOR), read_pickle(MODEL))
            metrics = read_json(METRICS)
            # the held-out split's first 5 rows, read as such (not the whole split for 5 rows)
            example = next(iter_parquet(PREPARED_TEST, 5, list(data.features)))
            signature = raw_signature(data, example, pipeline.predict_proba(example))
            columns, batch_rows = list(data.features), params.resources.batch_rows
            profile = make_profile(
                lambda: iter_parquet(PREPARED_TRAIN, batch_rows, columns),
                list(data.numerical),
                list(data.categorical),
                settings.profile_bins,
            )
            features = (f.drop(columns=[data.target]) for f in iter_parquet(FEATURES_TRAIN, batch_rows))
            _, feature_means = column_means(features)
            md5 = model_md5(PREPROCESSOR, MODEL, signature, {"profile": profile, "feature_means": feature_means})
            decision = {**gate(metrics, settings.thresholds), "model_md5": md5}
            staged = {str(DECISION): out.path(DECISION), str(MODEL_CARD): out.path(MODEL_CARD)}
            with phase("logging"):
                labels = labels_of(read_json(DATA_QUALITY), data.positive_label)
                threshold = params.evaluate.threshold
                info, serving = log_pipeline(
                    run.run_id,
                    run.store.experiment_id,
                    dict(run.own.params),
                    pipeline,
                    data,
                    params.model.type,
                    signature,
                    example,
                    labels,
                    threshold,
                    profile,
                    feature_means,
                )
            decision = with_serving(decision, serving)  # a model that cannot be served fails the gate
            # The test metrics on the logged model too (MLflow 3's Models view), against the held-out split.
            test = test_dataset(PREPARED_TEST)
            run.log_inputs([test])
            run.log_metrics(
                metrics, prefix="test_", model_id=info.model_id, dataset=(TEST_DATASET, test.dataset.digest)
            )
            write_json(decision, staged[str(DECISION)])
            card = model_card(
                model_name=settings.model_name,
                family=params.model.type,
                hyperparameters=params.model.hyperparameters(),
                calibration=params.train.calibration,
                data=data.model_dump(),
                quality=read_json(DATA_QUALITY),
                metrics=metrics,
                slices=read_json(SLICES),
                decision=decision,
                threshold=params.evaluate.threshold,
                top_share=params.evaluate.top_share,
                **settings.card.model_dump(),
            )
            staged[str(MODEL_CARD)].write_text(card)
            run.log_artifact(staged[str(MODEL_CARD)], "reports")
            run.log_artifact(Path("params.yaml"), "lineage")
            run.record_outputs(staged)

            if not decision["passed"]:
                reason = "gate failed: " + "; ".join(failures(decision))
                run.set_tags({"registry.decision": reason})
                log.info("registry %s: no version (%s)", settings.model_name, reason)
            else:
                lineage = lineage_tags(params, run.run_id)
                md5, description = decision["model_md5"], describe(lineage, params, metrics)
                candidate = Candidate(info.model_uri, run.run_id, md5, metrics, lineage, description)
                with store_lock():  # parallel queue workers: one registry change at a time
                    outcome = register(
                        run.store.client,
                        settings.model_name,
                        candidate,
                        primary_metric=params.evaluate.primary_metric,
                        min_improvement=settings.min_improvement,
                        allow_other_data=settings.allow_other_data,
                    )
                run.set_tags({"registry.decision": outcome.reason, "registry.version": str(outcome.version)})
                log.info("registry %s: version %s (%s)", settings.model_name, outcome.version, outcome.reason)
        out.publish()


if __name__ == "__main__":
    entry(run)
