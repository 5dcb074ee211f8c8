"""Classifier metrics and curve data (plain dicts and lists, ready for JSON)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

DIGITS = 6
MAX_CURVE_POINTS = 400
CALIBRATION_BINS = 10  # equal-width probability bins of the reliability curve and the ECE


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 at `threshold`; ROC AUC, PR AUC, log loss, Brier on the probabilities.
    `sample_weight`: counts of repeated (label, score) pairs (evaluate's ScoreCounts). Computed in
    float64 whatever the model's output type (xgboost's is float32), so sums do not carry float32 rounding."""
    proba = np.asarray(proba, dtype=np.float64)
    y_pred = (proba >= threshold).astype(int)
    w = sample_weight
    values = {
        "accuracy": skm.accuracy_score(y_true, y_pred, sample_weight=w),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0, sample_weight=w),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0, sample_weight=w),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0, sample_weight=w),
        "roc_auc": skm.roc_auc_score(y_true, proba, sample_weight=w),
        "pr_auc": skm.average_precision_score(y_true, proba, sample_weight=w),
        "log_loss": skm.log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1], sample_weight=w),
        "brier": skm.brier_score_loss(y_true, proba, sample_weight=w),
    }
    return {name: round(float(value), DIGITS) for name, value in values.items()}


def _thin(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    if len(rows) <= MAX_CURVE_POINTS:
        return rows
    keep = np.unique(np.linspace(0, len(rows) - 1, MAX_CURVE_POINTS).round().astype(int))
    return [rows[i] for i in keep]


def roc_points(
    y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None
) -> list[dict[str, float]]:
    fpr, tpr, thresholds = skm.roc_curve(y_true, proba, sample_weight=sample_weight)
    rows = [
        {"fpr": round(float(f), DIGITS), "tpr": round(float(t), DIGITS), "threshold": round(float(min(h, 1.0)), DIGITS)}
        for f, t, h in zip(fpr, tpr, thresholds, strict=True)
    ]
    return _thin(rows)


def pr_points(y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> list[dict[str, float]]:
    precision, recall, thresholds = skm.precision_recall_curve(y_true, proba, sample_weight=sample_weight)
    thresholds = np.append(thresholds, 1.0)
    rows = [
        {"recall": round(float(r), DIGITS), "precision": round(float(p), DIGITS), "threshold": round(float(h), DIGITS)}
        for p, r, h in zip(precision, recall, thresholds, strict=True)
    ]
    return _thin(rows)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, positive_label: object, sample_weight: np.ndarray | None = None
) -> dict:
    report = skm.classification_report(
        y_true,
        y_pred,
        labels=[0, 1],
        target_names=[f"not {positive_label}", str(positive_label)],
        output_dict=True,
        zero_division=0,
        sample_weight=sample_weight,
    )
    if sample_weight is not None:  # counts as weights: supports are still row counts (floats, as unweighted)
        for row in report.values():
            if isinstance(row, dict) and "support" in row:
                row["support"] = float(round(row["support"]))
    return _round(report)


def _round(value):
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, DIGITS)
    return value


def confusion(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """2x2 counts, rows = actual (0, 1), columns = predicted (0, 1)."""
    matrix = skm.confusion_matrix(y_true, y_pred, labels=[0, 1], sample_weight=sample_weight)
    return matrix if sample_weight is None else np.rint(matrix).astype(np.int64)


def reliability(
    y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None, bins: int = CALIBRATION_BINS
) -> tuple[list[dict[str, float]], float]:
    """The reliability curve (per non-empty equal-width probability bin: mean predicted probability, observed
    churn rate, rows) and the expected calibration error: the rows' share-weighted mean of |observed - predicted|
    over the bins."""
    proba = np.asarray(proba, dtype=np.float64)
    weight = np.ones(len(proba)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    at = np.minimum((proba * bins).astype(np.intp), bins - 1)
    rows = np.bincount(at, weights=weight, minlength=bins)
    present = rows > 0
    predicted = np.bincount(at, weights=weight * proba, minlength=bins)[present] / rows[present]
    observed = np.bincount(at, weights=weight * np.asarray(y_true), minlength=bins)[present] / rows[present]
    ece = float(np.sum(rows[present] / rows.sum() * np.abs(observed - predicted)))
    curve = [
        {"predicted": round(float(p), DIGITS), "observed": round(float(o), DIGITS), "rows": round(float(n))}
        for p, o, n in zip(predicted, observed, rows[present], strict=True)
    ]
    return curve, round(ece, DIGITS)


def gains(y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> list[dict[str, float]]:
    """Cumulative gains and lift, customers taken by descending score: at each distinct score, the share of
    customers taken so far (`share`), the share of churners among them of all churners (`gain`) and
    gain / share (`lift`); thinned to MAX_CURVE_POINTS."""
    cumulative_rows, cumulative_positives = _by_descending_score(y_true, proba, sample_weight)
    share = cumulative_rows / cumulative_rows[-1]
    gain = cumulative_positives / max(cumulative_positives[-1], 1e-300)
    rows = [
        {"share": round(float(s), DIGITS), "gain": round(float(g), DIGITS), "lift": round(float(g / s), DIGITS)}
        for s, g in zip(share, gain, strict=True)
    ]
    return _thin(rows)


def top_share_metrics(
    y_true: np.ndarray, proba: np.ndarray, share: float, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """Precision and recall among the `share` of customers with the highest scores (`precision_at_k`,
    `recall_at_k`). Customers tied at the cut count in proportion: the expected value of breaking the tie at
    random."""
    cumulative_rows, cumulative_positives = _by_descending_score(y_true, proba, sample_weight)
    total_rows, total_positives = cumulative_rows[-1], cumulative_positives[-1]
    taken = share * total_rows
    group = int(np.searchsorted(cumulative_rows, taken, side="left"))  # the tie group the cut falls in
    rows_before = cumulative_rows[group - 1] if group else 0.0
    positives_before = cumulative_positives[group - 1] if group else 0.0
    group_rows = cumulative_rows[group] - rows_before
    group_positives = cumulative_positives[group] - positives_before
    positives = positives_before + (group_positives * (taken - rows_before) / group_rows if group_rows else 0.0)
    precision = positives / taken if taken else 0.0
    recall = positives / total_positives if total_positives else 0.0
    return {"precision_at_k": round(float(precision), DIGITS), "recall_at_k": round(float(recall), DIGITS)}


def _by_descending_score(
    y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct score, descending, the rows and the positives scored at or above it (ties together)."""
    proba = np.asarray(proba, dtype=np.float64)
    weight = np.ones(len(proba)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    distinct, at = np.unique(-proba, return_inverse=True)
    rows = np.bincount(at, weights=weight, minlength=len(distinct))
    positives = np.bincount(at, weights=weight * np.asarray(y_true), minlength=len(distinct))
    return np.cumsum(rows), np.cumsum(positives)
