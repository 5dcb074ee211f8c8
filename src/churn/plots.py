"""Figures as PNG files: confusion matrix, feature importance, ROC and precision-recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# PNG metadata without the matplotlib version, so a figure's bytes depend only on its content.
_META = {"Software": None}


def _figure(width: float = 5.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=100)


def _save(plt, fig, path: Path) -> None:
    from churn.timing import phase

    with phase("write"):
        fig.tight_layout()
        fig.savefig(path, format="png", metadata=_META)
    plt.close(fig)


def confusion_matrix_png(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    plt, fig, ax = _figure(4.5, 4.0)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count:d}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (test)")
    _save(plt, fig, path)


def feature_importance_png(importance: pd.Series, path: Path) -> None:
    shown = importance.head(20)[::-1]
    plt, fig, ax = _figure(6.0, max(2.5, 0.35 * len(shown) + 1))
    ax.barh(shown.index.astype(str), shown.to_numpy(), color="#3b75af")
    ax.set_xlabel("share of importance")
    ax.set_title("Feature importance (raw features)")
    _save(plt, fig, path)


def curve_png(points: list[dict[str, float]], x: str, y: str, title: str, path: Path, diagonal: bool) -> None:
    plt, fig, ax = _figure()
    ax.plot([p[x] for p in points], [p[y] for p in points], color="#3b75af")
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    _save(plt, fig, path)
