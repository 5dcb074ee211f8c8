"""evaluate: score the held-out split batch by batch (a split smaller than resources.batch_rows is one batch)
into counts of distinct (score, label) pairs, from which the metrics and the ROC and precision-recall curves are
exact (the counts are the sample weights), and bootstrap intervals of them by reweighting those pairs; write
metrics, plot data, figures and a classification report; per value of each evaluate.slices column (read from the
prepared split, row for row beside the features), the same counts give reports/slices.json.

in: models/model.pkl, models/preprocessor.pkl, data/features/test.parquet, data/prepared/test.parquet
out: reports/metrics.json, reports/slices.json, reports/plots/*, reports/figures/*, reports/*.json
params: evaluate, data.target, data.positive_label, data.numerical, data.categorical, resources.batch_rows
"""

from __future__ import annotations

import re
from pathlib import Path

from churn.config import Params
from churn.core import evaluation, plots
from churn.core.bootstrap import bootstrap_intervals
from churn.core.features import raw_feature_importance
from churn.core.slices import SliceCounts, worst_roc_auc
from churn.core.streaming import ConfusionRows, ScoreCounts, quantile_edges
from churn.pipeline import entry
from churn.storage import paths as p
from churn.storage.outputs import StagedOutputs, read_pickle, write_csv_rows, write_figure, write_json
from churn.storage.parquet import RowReader, iter_parquet
from churn.tracking.runs import stage_run

# DVC's confusion template draws one mark per row: past this many test rows the CSV holds this many rows in
# the same proportions (the figure and reports/classification_report.json keep the exact counts).
CONFUSION_ROWS = 100_000


def run(params: Params) -> None:
    target, label, threshold = params.data.target, params.data.positive_label, params.evaluate.threshold
    batch_rows, slices = params.resources.batch_rows, list(params.evaluate.slices)
    inputs = [p.MODEL, p.PREPROCESSOR, p.FEATURES_TEST, p.PREPARED_TEST]
    with StagedOutputs("evaluate") as out, stage_run("evaluate", params.mlflow, inputs) as run:
        run.log_params({"evaluate": params.evaluate.model_dump()})
        model, preprocessor = read_pickle(p.MODEL), read_pickle(p.PREPROCESSOR)
        counts, confusion_rows = ScoreCounts(), ConfusionRows(CONFUSION_ROWS)
        numeric = [c for c in slices if c in params.data.numerical]
        edges = quantile_edges(
            numeric, params.evaluate.slice_bins, lambda: iter_parquet(p.PREPARED_TEST, batch_rows, numeric)
        )
        slice_counts, raw = SliceCounts(slices, edges), RowReader(p.PREPARED_TEST, batch_rows, slices)
        for frame in iter_parquet(p.FEATURES_TEST, batch_rows):
            actual = frame[target].to_numpy()
            proba = model.predict_proba(frame.drop(columns=[target]).to_numpy())[:, 1]
            counts.update(actual, proba)
            confusion_rows.update(actual, (proba >= threshold).astype(int))
            if slices:
                slice_counts.update(raw.take(len(frame)), actual, proba)
        if slices:
            raw.finish()
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
        slice_report = slice_counts.report(threshold)
        if (worst := worst_roc_auc(slice_report)) is not None:
            metrics["worst_slice_roc_auc"] = worst
        matrix = evaluation.confusion(y_true, y_pred, sample_weight=weight)
        importance = raw_feature_importance(preprocessor, model)
        report = evaluation.classification_report(y_true, y_pred, label, sample_weight=weight)
        curves = {"roc": roc, "prc": prc, "calibration": calibration, "gains": gains}
        run.log_metrics(slice_metrics(slice_report), prefix="test_slice.", parent=False)
        tables = {p.REPORT: report, p.SLICES: slice_report}
        publish(out, run, label, metrics, curves, confusion_rows.rows(matrix), tables, importance, matrix)


def slice_metrics(report: dict) -> dict[str, float]:
    """reports/slices.json as flat MLflow metrics (`contract_type.Two year.roc_auc`), characters MLflow refuses
    in a key replaced by `_`."""
    return {
        re.sub(r"[^\w\-. /]", "_", f"{column}.{value}.{name}"): number
        for column, values in report.items()
        for value, row in values.items()
        for name, number in row.items()
        if number is not None
    }


def publish(out, run, label, metrics, curves, confusion_rows, tables, importance, matrix) -> None:
    """Write evaluate's outputs (metrics, plot data, report, figures), log them to the run, publish them."""
    staged = {str(path): out.path(path) for path in p.EVALUATE_OUTPUTS}
    write_json(metrics, staged[str(p.METRICS)])
    roc, prc, calibration, gains = curves["roc"], curves["prc"], curves["calibration"], curves["gains"]
    write_json({"roc": roc}, staged[str(p.ROC)])
    write_json({"prc": prc}, staged[str(p.PRC)])
    write_json({"calibration": calibration}, staged[str(p.CALIBRATION)])
    write_json({"gains": gains}, staged[str(p.GAINS)])
    write_csv_rows(["actual", "predicted"], confusion_rows, staged[str(p.CONFUSION)])  # DVC's confusion template
    for path, table in tables.items():  # the classification report, the slices
        write_json(table, staged[str(path)])
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
