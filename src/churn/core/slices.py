"""Metrics per slice of the test split: for each slice column (evaluate.slices), each of its values (a category,
or a quantile bin of a numeric column) gets its rows, positives, ROC AUC (when both classes are present) and
recall at the threshold. Kept batch by batch as counts of distinct (score, label) pairs per slice value, so
memory is bounded by the distinct scores, not the rows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from churn.core.evaluation import DIGITS
from churn.core.streaming import MISSING, ScoreCounts


def bin_labels(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin, named by its bounds (`< 12`, `[12, 29)`, `>= 55`; `missing` for NaN)."""
    values = np.asarray(values, dtype=np.float64)
    names = [f"< {edges[0]:g}"] if len(edges) else ["all"]
    names += [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)]
    names += [f">= {edges[-1]:g}"] if len(edges) else []
    labels = np.array(names, dtype=object)[np.searchsorted(edges, values, side="right")]
    labels[np.isnan(values)] = MISSING
    return labels


class SliceCounts:
    """Score counts per slice column and value, updated batch by batch."""

    def __init__(self, columns: list[str], edges: dict[str, np.ndarray]) -> None:
        self.columns, self.edges = columns, edges  # edges: the numeric columns' (quantile_edges)
        self.counts: dict[str, dict[str, ScoreCounts]] = {name: {} for name in columns}
        self.rows = 0

    def update(self, frame: pd.DataFrame, labels: np.ndarray, scores: np.ndarray) -> None:
        """Add a batch: `frame` holds the slice columns of the rows scored `scores` with true `labels`."""
        self.rows += len(frame)
        for name in self.columns:
            if name in self.edges:
                values = bin_labels(frame[name].to_numpy(), self.edges[name])
            else:
                values = frame[name].astype(object).where(frame[name].notna(), MISSING).astype(str).to_numpy()
            for value in np.unique(values):
                mine = values == value
                self.counts[name].setdefault(str(value), ScoreCounts()).update(labels[mine], scores[mine])

    def report(self, threshold: float) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """{column: {value: {rows, positives, roc_auc, recall}}}; roc_auc is null for a slice with one class,
        recall for a slice without positives."""
        from sklearn.metrics import roc_auc_score

        out: dict[str, dict[str, dict[str, float | int | None]]] = {}
        for name in self.columns:
            out[name] = {}
            for value in sorted(self.counts[name]):
                labels, scores, counts = self.counts[name][value].arrays()
                positives = int(counts[labels == 1].sum())
                rows = int(counts.sum())
                found = int(counts[(labels == 1) & (scores >= threshold)].sum())
                auc = roc_auc_score(labels, scores, sample_weight=counts) if 0 < positives < rows else None
                out[name][value] = {
                    "rows": rows,
                    "positives": positives,
                    "roc_auc": None if auc is None else round(float(auc), DIGITS),
                    "recall": round(found / positives, DIGITS) if positives else None,
                }
        return out


def worst_roc_auc(report: dict[str, dict[str, dict]]) -> float | None:
    """The lowest ROC AUC over every slice that has one (None when none has)."""
    values = [s["roc_auc"] for column in report.values() for s in column.values() if s["roc_auc"] is not None]
    return min(values) if values else None
