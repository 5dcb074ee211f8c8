"""Drift of scored rows from the training columns: a small reference profile of the train split (quantile bins
for numbers, shares for categories), made batch by batch when a model is registered and carried in its metadata;
the population stability index (PSI) of each column of a scored batch against it; and a per-row flag for values
training never saw (a number outside the profiled range, an unseen category).

PSI = sum over bins of (actual - expected) * ln(actual / expected), shares floored at FLOOR so an empty bin
counts: under 0.1 is usually read as stable, 0.1-0.25 as a shift to look at, over 0.25 as a large shift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from churn.core.streaming import MISSING, count_categories, quantile_edges
from churn.errors import DataError

FLOOR = 1e-4  # the smallest share a bin counts with (an empty bin would make PSI infinite)
DIGITS = 6


def _numeric_bins(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Each value's bin: 0..len(edges) by the edges, len(edges) + 1 for a missing value."""
    values = np.asarray(values, dtype=np.float64)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    bins[np.isnan(values)] = len(edges) + 1
    return bins


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c / total), DIGITS) if total else 0.0 for c in counts]


def make_profile(
    read: Callable[[], Iterable[pd.DataFrame]], numerical: list[str], categorical: list[str], bins: int
) -> dict:
    """The reference profile of the columns that `read()` yields batch by batch (a few passes): per numeric
    column its inner bin edges (exact quantiles at 1/bins, 2/bins, ...), the share of rows in each bin and
    missing (last), and its range; per categorical column the share of each category (missing as `missing`)."""
    edges = {name: [float(e) for e in found] for name, found in quantile_edges(numerical, bins, read).items()}
    counts = {name: np.zeros(len(edges[name]) + 2, dtype=np.int64) for name in numerical}
    low = dict.fromkeys(numerical, np.inf)
    high = dict.fromkeys(numerical, -np.inf)
    categories: dict[str, dict[str, int]] = {}
    for frame in read():
        for name in numerical:
            values = frame[name].to_numpy(dtype=np.float64)
            counts[name] += np.bincount(_numeric_bins(values, edges[name]), minlength=len(counts[name]))
            if (~np.isnan(values)).any():
                low[name], high[name] = min(low[name], np.nanmin(values)), max(high[name], np.nanmax(values))
        count_categories(frame, categorical, categories)
    return {
        "numerical": {
            name: {
                "edges": edges[name],
                "shares": _shares(counts[name]),
                "min": float(low[name]) if np.isfinite(low[name]) else None,
                "max": float(high[name]) if np.isfinite(high[name]) else None,
            }
            for name in numerical
        },
        "categorical": {name: _category_shares(categories.get(name, {})) for name in categorical},
    }


def _category_shares(counts: dict[str, int]) -> dict[str, float]:
    names = sorted(counts, key=str)
    return dict(zip(map(str, names), _shares(np.array([counts[n] for n in names], dtype=np.int64)), strict=True))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The population stability index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(profile: dict, frame: pd.DataFrame, source: str) -> tuple[dict, np.ndarray]:
    """Each profiled column's PSI and count of unseen values in `frame` (cleaned raw columns), and a per-row
    flag: True where any column holds a value training never saw. A profiled column missing from `frame` is a
    one-line DataError naming `source`."""
    for name in [*profile["numerical"], *profile["categorical"]]:
        if name not in frame.columns:
            raise DataError(source, f"missing column {name!r} of the model's training profile (drift reference)")
    unseen_rows = np.zeros(len(frame), dtype=bool)
    columns = {}
    for name, reference in profile["numerical"].items():
        values = frame[name].to_numpy(dtype=np.float64)
        counts = np.bincount(_numeric_bins(values, reference["edges"]), minlength=len(reference["shares"]))
        unseen = np.zeros(len(values), dtype=bool)
        if reference["min"] is not None:
            with np.errstate(invalid="ignore"):
                unseen = (values < reference["min"]) | (values > reference["max"])
        columns[name] = {"psi": psi(reference["shares"], counts / max(len(values), 1)), "unseen": int(unseen.sum())}
        unseen_rows |= unseen
    for name, reference in profile["categorical"].items():
        values = frame[name].astype(object).where(frame[name].notna(), MISSING).astype(str)
        known = list(reference)
        found = values.value_counts()
        unseen = ~values.isin(known).to_numpy()
        actual = [found.get(value, 0) / max(len(values), 1) for value in known] + [unseen.sum() / max(len(values), 1)]
        columns[name] = {"psi": psi([*reference.values(), 0.0], actual), "unseen": int(unseen.sum())}
        unseen_rows |= unseen
    for column in columns.values():
        column["psi"] = round(column["psi"], DIGITS)
    return {"rows": len(frame), "unseen_rows": int(unseen_rows.sum()), "columns": columns}, unseen_rows
