"""evaluate: score the held-out split; write metrics, plot data, figures and a classification report.

in: models/model.pkl, models/preprocessor.pkl, data/features/test.parquet
out: reports/metrics.json, reports/plots/*, reports/figures/*, reports/classification_report.json
params: evaluate, data.target, data.positive_label
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np

from churn.features import raw_feature_importance
from churn.io import StagedOutputs, read_parquet, read_pickle, write_json
from churn.layout import (
    CONFUSION,
    FEATURES_TEST,
    FIG_CONFUSION,
    FIG_IMPORTANCE,
    FIG_PRC,
    FIG_ROC,
    IMPORTANCE,
    METRICS,
    MODEL,
    PRC,
    PREPROCESSOR,
    REPORT,
    ROC,
)
from churn.metrics import classification_metrics, classification_report, pr_points, roc_points
from churn.params import Params
from churn.plots import confusion_matrix_png, curve_png, feature_importance_png
from churn.stages import entry
from churn.tracking import stage_run

OUTPUTS = (METRICS, ROC, PRC, CONFUSION, REPORT, IMPORTANCE, FIG_CONFUSION, FIG_IMPORTANCE, FIG_ROC, FIG_PRC)


def run(params: Params) -> None:
    target = params.data.target
    threshold = params.evaluate.threshold
    with StagedOutputs("evaluate") as out:
        with stage_run("evaluate", params.mlflow, [MODEL, PREPROCESSOR, FEATURES_TEST]) as run:
            run.log_params({"evaluate": asdict(params.evaluate)})
            model = read_pickle(MODEL)
            preprocessor = read_pickle(PREPROCESSOR)
            test = read_parquet(FEATURES_TEST)
            y_true = test[target].to_numpy()
            proba = model.predict_proba(test.drop(columns=[target]).to_numpy())[:, 1]
            y_pred = (proba >= threshold).astype(int)

            metrics = classification_metrics(y_true, proba, threshold)
            roc, prc = roc_points(y_true, proba), pr_points(y_true, proba)
            importance = raw_feature_importance(preprocessor, model)
            matrix = np.array([[np.sum((y_true == a) & (y_pred == p)) for p in (0, 1)] for a in (0, 1)])
            labels = [f"not {params.data.positive_label}", str(params.data.positive_label)]

            staged = {str(p): out.path(p) for p in OUTPUTS}
            write_json(metrics, staged[str(METRICS)])
            write_json({"roc": roc}, staged[str(ROC)])
            write_json({"prc": prc}, staged[str(PRC)])
            _write_confusion(y_true, y_pred, staged[str(CONFUSION)])
            write_json(classification_report(y_true, y_pred, params.data.positive_label), staged[str(REPORT)])
            write_json({k: round(float(v), 6) for k, v in importance.items()}, staged[str(IMPORTANCE)])
            confusion_matrix_png(matrix, labels, staged[str(FIG_CONFUSION)])
            feature_importance_png(importance, staged[str(FIG_IMPORTANCE)])
            curve_png(roc, "fpr", "tpr", f"ROC (AUC {metrics['roc_auc']:.3f})", staged[str(FIG_ROC)], diagonal=True)
            curve_png(
                prc,
                "recall",
                "precision",
                f"Precision-recall (AP {metrics['pr_auc']:.3f})",
                staged[str(FIG_PRC)],
                diagonal=False,
            )

            run.log_metrics(metrics, prefix="test_")
            for final, path in staged.items():
                run.log_artifact(path, str(Path(final).parent))
            run.record_outputs(staged)
        out.publish()


def _write_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> None:
    """One row per test example, as DVC's confusion template expects."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(y_true.tolist(), y_pred.tolist(), strict=True))


def main() -> None:
    entry(run)


if __name__ == "__main__":
    main()
