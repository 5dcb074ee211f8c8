"""Bootstrap confidence intervals of the test metrics from the distinct (score, label) pairs with counts that
evaluate keeps (churn.core.streaming.ScoreCounts). Resampling the test rows with replacement is drawing, for each
distinct pair, how many times it is picked: one multinomial draw of the row count over the pairs' shares. Every
metric is then a weighted sum over the pairs (ROC AUC by ranks, PR AUC as average precision over the distinct
scores), computed for a block of resamples at once as matrix operations: one weight matrix serves every metric.

Memory is bounded by BLOCK_ENTRIES (resamples x distinct pairs per block), never by the row count.
"""

from __future__ import annotations

import numpy as np

CI_METRICS = ("roc_auc", "pr_auc", "f1", "log_loss", "brier")
BLOCK_ENTRIES = 1 << 22  # weights held at once: a block of resamples x distinct pairs
_EPS = 1e-15  # probabilities clipped as classification_metrics clips them for log loss


def resample_metrics(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Each metric of CI_METRICS for each row of `weights` (resamples x pairs): the weighted metric over the
    pairs (`labels`, `scores`). A resample without both classes has NaN ROC and PR AUC."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    positive = labels == 1
    total = weights.sum(axis=1)
    pos_w = weights[:, positive].sum(axis=1)
    neg_w = total - pos_w

    # The scores' distinct values in ascending order; a score has at most one positive and one negative pair.
    distinct, at = np.unique(scores, return_inverse=True)
    wp = np.zeros((len(weights), len(distinct)))
    wn = np.zeros((len(weights), len(distinct)))
    wp[:, at[positive]] = weights[:, positive]
    wn[:, at[~positive]] = weights[:, ~positive]
    with np.errstate(invalid="ignore", divide="ignore"):
        # ROC AUC: each positive beats the negatives scored lower and ties half of those scored the same.
        below = np.cumsum(wn, axis=1) - wn
        roc_auc = (wp * (below + 0.5 * wn)).sum(axis=1) / (pos_w * neg_w)
        # Average precision (scikit-learn's): precision at each distinct score, descending, weighted by the
        # recall it adds.
        tp = np.cumsum(wp[:, ::-1], axis=1)
        fp = np.cumsum(wn[:, ::-1], axis=1)
        precision = np.where(tp > 0, tp / np.maximum(tp + fp, _EPS), 0.0)
        pr_auc = (wp[:, ::-1] * precision).sum(axis=1) / pos_w
        roc_auc[(pos_w == 0) | (neg_w == 0)] = np.nan
        pr_auc[pos_w == 0] = np.nan

    predicted = scores >= threshold
    true_pos = weights[:, positive & predicted].sum(axis=1)
    false_pos = weights[:, ~positive & predicted].sum(axis=1)
    false_neg = weights[:, positive & ~predicted].sum(axis=1)
    f1_denominator = 2 * true_pos + false_pos + false_neg
    f1 = np.divide(2 * true_pos, f1_denominator, out=np.zeros_like(true_pos), where=f1_denominator > 0)

    clipped = np.clip(scores, _EPS, 1 - _EPS)
    loss = np.where(positive, -np.log(clipped), -np.log1p(-clipped))
    squared = (scores - positive) ** 2
    return {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "f1": f1,
        "log_loss": weights @ loss / total,
        "brier": weights @ squared / total,
    }


def bootstrap_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    counts: np.ndarray,
    threshold: float,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, float]:
    """Percentile bootstrap intervals `<metric>_ci_low` and `<metric>_ci_high` of CI_METRICS over `resamples`
    resamples of the rows that the distinct pairs (`labels`, `scores`) with `counts` stand for (seeded: the same
    inputs give the same intervals)."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = int(counts.sum())
    rng = np.random.default_rng(seed)
    shares = counts / rows
    block = max(1, min(resamples, BLOCK_ENTRIES // max(1, len(counts))))
    values: dict[str, list[np.ndarray]] = {name: [] for name in CI_METRICS}
    for start in range(0, resamples, block):
        weights = rng.multinomial(rows, shares, size=min(block, resamples - start))
        for name, column in resample_metrics(labels, scores, weights, threshold).items():
            values[name].append(column)
    tail = (1 - confidence) / 2
    out = {}
    for name in CI_METRICS:
        low, high = np.nanquantile(np.concatenate(values[name]), [tail, 1 - tail])
        out[f"{name}_ci_low"] = round(float(low), 6)
        out[f"{name}_ci_high"] = round(float(high), 6)
    return out
