"""evaluate: score the held-out split; write metrics, plot data, figures and a classification report.

in: models/model.pkl, models/preprocessor.pkl, data/features/test.parquet
out: reports/metrics.json, reports/plots/*, reports/figures/*, reports/*.json | params: evaluate, data.target
"""

from __future__ import annotations

from pathlib import Path

from churn.config import Params
from churn.core import evaluation, plots
from churn.core.features import raw_feature_importance
from churn.pipeline import entry
from churn.pipeline import paths as p
from churn.pipeline.batches import stored_rows, streams
from churn.pipeline.files import StagedOutputs, read_parquet, read_pickle, write_csv_rows, write_figure, write_json
from churn.tracking.runs import stage_run


def run(params: Params) -> None:
    if streams(stored_rows(p.FEATURES_TEST), params.resources):  # the large-data path
        from churn.pipeline.large import evaluate

        return evaluate.run(params)
    target, label = params.data.target, params.data.positive_label
    inputs = [p.MODEL, p.PREPROCESSOR, p.FEATURES_TEST]
    with StagedOutputs("evaluate") as out, stage_run("evaluate", params.mlflow, inputs) as run:
        run.log_params({"evaluate": params.evaluate.model_dump()})
        model, preprocessor = read_pickle(p.MODEL), read_pickle(p.PREPROCESSOR)
        test = read_parquet(p.FEATURES_TEST)
        y_true = test[target].to_numpy()
        proba = model.predict_proba(test.drop(columns=[target]).to_numpy())[:, 1]
        y_pred = (proba >= params.evaluate.threshold).astype(int)

        metrics = evaluation.classification_metrics(y_true, proba, params.evaluate.threshold)
        roc, prc = evaluation.roc_points(y_true, proba), evaluation.pr_points(y_true, proba)
        importance = raw_feature_importance(preprocessor, model)
        rows = zip(y_true.tolist(), y_pred.tolist(), strict=True)  # one row per test example
        report = evaluation.classification_report(y_true, y_pred, label)
        matrix = evaluation.confusion(y_true, y_pred)
        publish_evaluation(out, run, label, metrics, roc, prc, rows, report, importance, matrix)


def publish_evaluation(out, run, label, metrics, roc, prc, confusion_rows, report, importance, matrix) -> None:
    """Write evaluate's outputs (metrics, plot data, report, figures), log them to the run, publish them:
    the same for the in-memory and the large-data path."""
    staged = {str(path): out.path(path) for path in p.EVALUATE_OUTPUTS}
    write_json(metrics, staged[str(p.METRICS)])
    write_json({"roc": roc}, staged[str(p.ROC)])
    write_json({"prc": prc}, staged[str(p.PRC)])
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
