"""evaluate: score the held-out split batch by batch (a split smaller than resources.batch_rows is one batch)
into counts of distinct (score, label) pairs, from which the metrics and the ROC and precision-recall curves are
exact (the counts are the sample weights), and bootstrap intervals of them by reweighting those pairs; write
metrics, plot data, figures and a classification report.

in: models/model.pkl, models/preprocessor.pkl, data/features/test.parquet
out: reports/metrics.json, reports/plots/*, reports/figures/*, reports/*.json
params: evaluate, data.target, data.positive_label, resources.batch_rows
"""

from __future__ import annotations

from pathlib import Path

from churn.config import Params
from churn.core import evaluation, plots
from churn.core.bootstrap import bootstrap_intervals
from churn.core.features import raw_feature_importance
from churn.core.streaming import ConfusionRows, ScoreCounts
from churn.pipeline import entry
from churn.storage import paths as p
from churn.storage.outputs import StagedOutputs, read_pickle, write_csv_rows, write_figure, write_json
from churn.storage.parquet import iter_parquet
from churn.tracking.runs import stage_run

# DVC's confusion template draws one mark per row: past this many test rows the CSV holds this many rows in
# the same proportions (the figure and reports/classification_report.json keep the exact counts).
CONFUSION_ROWS = 100_000


def run(params: Params) -> None:
    target, label, threshold = params.data.target, params.data.positive_label, params.evaluate.threshold
    inputs = [p.MODEL, p.PREPROCESSOR, p.FEATURES_TEST]
    with StagedOutputs("evaluate") as out, stage_run("evaluate", params.mlflow, inputs) as run:
        run.log_params({"evaluate": params.evaluate.model_dump()})
        model, preprocessor = read_pickle(p.MODEL), read_pickle(p.PREPROCESSOR)
        counts, confusion_rows = ScoreCounts(), ConfusionRows(CONFUSION_ROWS)
        for frame in iter_parquet(p.FEATURES_TEST, params.resources.batch_rows):
            actual = frame[target].to_numpy()
            proba = model.predict_proba(frame.drop(columns=[target]).to_numpy())[:, 1]
            counts.update(actual, proba)
            confusion_rows.update(actual, (proba >= threshold).astype(int))
        y_true, proba, weight = counts.arrays()
        y_pred = (proba >= threshold).astype(int)

        metrics = evaluation.classification_metrics(y_true, proba, threshold, sample_weight=weight)
        boot = params.evaluate.bootstrap
        metrics |= bootstrap_intervals(y_true, proba, weight, threshold, boot.resamples, boot.confidence, boot.seed)
        roc = evaluation.roc_points(y_true, proba, sample_weight=weight)
        prc = evaluation.pr_points(y_true, proba, sample_weight=weight)
        calibration, metrics["ece"] = evaluation.reliability(y_true, proba, sample_weight=weight)
        metrics |= evaluation.top_share_metrics(y_true, proba, params.evaluate.top_share, sample_weight=weight)
        gains = evaluation.gains(y_true, proba, sample_weight=weight)
        matrix = evaluation.confusion(y_true, y_pred, sample_weight=weight)
        importance = raw_feature_importance(preprocessor, model)
        report = evaluation.classification_report(y_true, y_pred, label, sample_weight=weight)
        curves = {"roc": roc, "prc": prc, "calibration": calibration, "gains": gains}
        publish(out, run, label, metrics, curves, confusion_rows.rows(matrix), report, importance, matrix)


def publish(out, run, label, metrics, curves, confusion_rows, report, importance, matrix) -> None:
    """Write evaluate's outputs (metrics, plot data, report, figures), log them to the run, publish them."""
    staged = {str(path): out.path(path) for path in p.EVALUATE_OUTPUTS}
    write_json(metrics, staged[str(p.METRICS)])
    roc, prc, calibration, gains = curves["roc"], curves["prc"], curves["calibration"], curves["gains"]
    write_json({"roc": roc}, staged[str(p.ROC)])
    write_json({"prc": prc}, staged[str(p.PRC)])
    write_json({"calibration": calibration}, staged[str(p.CALIBRATION)])
    write_json({"gains": gains}, staged[str(p.GAINS)])
    write_csv_rows(["actual", "predicted"], confusion_rows, staged[str(p.CONFUSION)])  # DVC's confusion template
    write_json(report, staged[str(p.REPORT)])
    write_json({k: round(float(v), 6) for k, v in importance.items()}, staged[str(p.IMPORTANCE)])
    figures = {
        p.FIG_CONFUSION: plots.confusion_matrix_figure(matrix, [f"not {label}", str(label)]),
        p.FIG_IMPORTANCE: plots.feature_importance_figure(importance),
        p.FIG_ROC: plots.curve_figure(roc, "fpr", "tpr", f"ROC (AUC {metrics['roc_auc']:.3f})", diagonal=True),
        p.FIG_PRC: plots.curve_figure(
            prc, "recall", "precision", f"Precision-recall (AP {metrics['pr_auc']:.3f})", diagonal=False
        ),
        p.FIG_CALIBRATION: plots.curve_figure(
            calibration, "predicted", "observed", f"Reliability (ECE {metrics['ece']:.3f})", diagonal=True
        ),
        p.FIG_GAINS: plots.curve_figure(gains, "share", "gain", "Cumulative gains", diagonal=True),
        p.FIG_LIFT: plots.lift_figure(gains),
    }
    for path, figure in figures.items():
        write_figure(figure, staged[str(path)])
    run.log_metrics(metrics, prefix="test_")
    for final, path in staged.items():
        run.log_artifact(path, str(Path(final).parent))
    run.record_outputs(staged)
    out.publish()


if __name__ == "__main__":
    entry(run)
