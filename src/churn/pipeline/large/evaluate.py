"""evaluate, streaming: the test split scored batch by batch into counts of distinct (score, label) pairs, from
which the metrics and the ROC and precision-recall curves are exact (the counts are the sample weights).

in: models/model.pkl, models/preprocessor.pkl, data/features/test.parquet
out: the default path's reports | params: evaluate, data.target, data.positive_label, resources.batch_rows
"""

from __future__ import annotations

from pathlib import Path

from churn.config import Params
from churn.core import evaluation
from churn.core.features import raw_feature_importance
from churn.core.streaming import ScoreCounts, confusion_rows
from churn.pipeline import paths as p
from churn.pipeline.batches import iter_parquet
from churn.pipeline.evaluate import publish_evaluation
from churn.pipeline.files import StagedOutputs, read_pickle
from churn.tracking.runs import stage_run

# DVC's confusion template draws one mark per row: past this many test rows the CSV holds this many rows in
# the same proportions (the figure and reports/classification_report.json keep the exact counts).
CONFUSION_ROWS = 100_000


def score(model, path: Path, target: str, batch_rows: int) -> ScoreCounts:
    """The model's churn probability for every row of `path`, as (score, label) counts."""
    counts = ScoreCounts()
    for frame in iter_parquet(path, batch_rows):
        proba = model.predict_proba(frame.drop(columns=[target]).to_numpy())[:, 1]
        counts.update(frame[target].to_numpy(), proba)
    return counts


def run(params: Params) -> None:
    target, label, threshold = params.data.target, params.data.positive_label, params.evaluate.threshold
    inputs = [p.MODEL, p.PREPROCESSOR, p.FEATURES_TEST]
    with StagedOutputs("evaluate") as out, stage_run("evaluate", params.mlflow, inputs) as run:
        run.log_params({"evaluate": params.evaluate.model_dump()})
        model, preprocessor = read_pickle(p.MODEL), read_pickle(p.PREPROCESSOR)
        y_true, proba, weight = score(model, p.FEATURES_TEST, target, params.resources.batch_rows).arrays()
        y_pred = (proba >= threshold).astype(int)

        metrics = evaluation.classification_metrics(y_true, proba, threshold, sample_weight=weight)
        roc = evaluation.roc_points(y_true, proba, sample_weight=weight)
        prc = evaluation.pr_points(y_true, proba, sample_weight=weight)
        matrix = evaluation.confusion(y_true, y_pred, sample_weight=weight)
        importance = raw_feature_importance(preprocessor, model)
        report = evaluation.classification_report(y_true, y_pred, label, sample_weight=weight)
        rows = confusion_rows(matrix, CONFUSION_ROWS)
        publish_evaluation(out, run, label, metrics, roc, prc, rows, report, importance, matrix)
