"""Figures: confusion matrix, feature importance, ROC and precision-recall (matplotlib Figures; the caller
saves them)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _figure(width: float = 5.0, height: float = 4.0):
    """A figure outside pyplot's global registry (nothing to close, nothing shared between calls)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def confusion_matrix_figure(matrix: np.ndarray, labels: list[str]):
    fig, ax = _figure(4.5, 4.0)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count:d}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    return fig


def feature_importance_figure(importance: pd.Series):
    shown = importance.head(20)[::-1]
    fig, ax = _figure(6.0, max(2.5, 0.35 * len(shown) + 1))
    ax.barh(shown.index.astype(str), shown.to_numpy(), color="#3b75af")
    ax.set_xlabel("share of importance")
    ax.set_title("Feature importance (raw features)")
    fig.tight_layout()
    return fig


def curve_figure(points: list[dict[str, float]], x: str, y: str, title: str, diagonal: bool):
    fig, ax = _figure()
    ax.plot([p[x] for p in points], [p[y] for p in points], color="#3b75af")
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def lift_figure(points: list[dict[str, float]]):
    """Lift against the share of customers taken by descending score (1 = no better than chance)."""
    fig, ax = _figure()
    ax.plot([p["share"] for p in points], [p["lift"] for p in points], color="#3b75af")
    ax.axhline(1.0, linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max([p["lift"] for p in points] + [1.0]) * 1.05)
    ax.set_xlabel("share of customers (highest scores first)")
    ax.set_ylabel("lift")
    ax.set_title("Lift")
    fig.tight_layout()
    return fig
