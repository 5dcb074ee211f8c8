"""Statistics gathered batch by batch, the stages' pure parts: exact order statistics in a few passes of bounded
memory, the preprocessor fitted from statistics, repeated-row keys, and score counts from which the metrics and
curves are exact. No file, DVC or MLflow I/O: the stages pass the batches in.

Memory is bounded by the batch size and by constants (a histogram of 2**16 counts per column), never by
the number of rows: a table of 100M rows is summarised in the same few megabytes as one of 1,000, and a
table of one batch gives what fitting on the whole table in memory gives, bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DIGIT_BITS = 16  # order statistics narrow the candidates 16 bits of the key at a time
BUCKETS = 1 << DIGIT_BITS
COLLECT = 1 << 22  # a bucket of at most this many candidates is collected and the value picked directly
_SIGN = np.uint64(1 << 63)
MISSING = "missing"  # the category a missing categorical value becomes (the preprocessor's imputers fill it)


# --- keys: positions and order-preserving integers ----------------------------------------------------------


def position_keys(start: int, rows: int, seed: int) -> np.ndarray:
    """Distinct pseudo-random 64-bit keys of row positions start..start+rows (splitmix64, a bijection),
    so that a sample of the rows with the smallest keys is the same whatever the batch size."""
    with np.errstate(over="ignore"):
        x = np.arange(start, start + rows, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def float_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys of float64 values (no NaN): a < b exactly when key(a) < key(b)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits >= _SIGN, ~bits, bits | _SIGN)


def key_floats(keys: np.ndarray) -> np.ndarray:
    """The inverse of float_keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.where(keys >= _SIGN, keys & ~_SIGN, ~keys).view(np.float64)


def top_digits(keys: np.ndarray) -> np.ndarray:
    """A histogram of the keys' leading 16 bits: the first step of an exact order statistic."""
    return np.bincount((keys >> np.uint64(64 - DIGIT_BITS)).astype(np.intp), minlength=BUCKETS)


# --- exact order statistics --------------------------------------------------------------------------------


@dataclass
class _Target:
    group: Hashable
    rank: int  # 0-based, among the candidates still matching `prefix`
    bits: int = 0  # how many leading bits are fixed
    prefix: int = 0
    candidates: int = -1  # how many keys share the prefix (-1: not known yet)
    found: int | None = None

    def matches(self, keys: np.ndarray) -> np.ndarray | None:
        if self.bits == 0:
            return None
        return (keys >> np.uint64(64 - self.bits)) == np.uint64(self.prefix)

    def narrow(self, histogram: np.ndarray) -> None:
        """Fix the next 16 bits from a histogram of them among the candidates."""
        cumulative = np.cumsum(histogram)
        digit = int(np.searchsorted(cumulative, self.rank, side="right"))
        self.rank -= int(cumulative[digit - 1]) if digit else 0
        self.prefix = (self.prefix << DIGIT_BITS) | digit
        self.bits += DIGIT_BITS
        self.candidates = int(histogram[digit])
        if self.bits == 64:
            self.found = self.prefix


def select_keys(
    read: Callable[[], Iterable[dict[Hashable, np.ndarray]]],
    ranks: dict[Hashable, list[int]],
    first: dict[Hashable, np.ndarray] | None = None,
    collect: int = COLLECT,
) -> dict[Hashable, list[int]]:
    """The exact keys at the given 0-based ranks, per group, over batches that `read()` yields afresh on
    every pass ({group: uint64 keys}). Each pass fixes 16 more leading bits (a histogram of 2**16 counts)
    until few enough candidates remain to collect (`collect`); `first` holds histograms of the leading
    16 bits already made (top_digits), which saves the first pass. At most 4 passes; usually 1."""
    targets = [_Target(group, rank) for group, wanted in ranks.items() for rank in wanted]
    for target in targets:
        if first is not None and target.group in first:
            target.narrow(first[target.group])
    passes = 0
    while any(t.found is None for t in targets):
        passes += 1
        pending = [t for t in targets if t.found is None]
        histograms = {
            id(t): np.zeros(BUCKETS, dtype=np.int64) for t in pending if t.candidates < 0 or t.candidates > collect
        }
        collected: dict[int, list[np.ndarray]] = {id(t): [] for t in pending if id(t) not in histograms}
        for batch in read():
            for t in pending:
                keys = batch.get(t.group)
                if keys is None or len(keys) == 0:
                    continue
                mask = t.matches(keys)
                chosen = keys if mask is None else keys[mask]
                if id(t) in collected:
                    collected[id(t)].append(chosen)
                else:
                    shift = np.uint64(64 - t.bits - DIGIT_BITS)
                    digits = ((chosen >> shift) & np.uint64(BUCKETS - 1)).astype(np.intp)
                    histograms[id(t)] += np.bincount(digits, minlength=BUCKETS)
        for t in pending:
            if id(t) in collected:
                values = np.concatenate(collected[id(t)]) if collected[id(t)] else np.empty(0, np.uint64)
                t.found = int(np.partition(values, t.rank)[t.rank])
            else:
                t.narrow(histograms[id(t)])
    log.debug("order statistics: %d targets in %d passes", len(targets), passes)
    out: dict[Hashable, list[int]] = {group: [] for group in ranks}
    for target in targets:
        out[target.group].append(target.found)
    return out


# --- numeric and categorical statistics --------------------------------------------------------------------


@dataclass
class NumericSummary:
    """One numeric column seen batch by batch: how many values are present and missing, their mean (each
    batch's as SimpleImputer computes it, merged by counts: a table of one batch gets the imputer's own mean),
    and a histogram of their leading key bits for the exact median."""

    count: int = 0
    missing: int = 0
    mean: float = 0.0  # 0 for a column without values, as SimpleImputer with keep_empty_features=True
    digits: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))

    def update(self, values: np.ndarray, mean: float | None = None) -> None:
        """Add a batch's values; `mean`: their mean as the imputer computes it (column_means), if wanted."""
        values = np.asarray(values, dtype=np.float64)
        missing = np.isnan(values)
        self.missing += int(missing.sum())
        present = values[~missing]
        if not len(present):
            return
        if mean is not None:
            self.mean = (
                mean if not self.count else self.mean + (mean - self.mean) * len(present) / (self.count + len(present))
            )
        self.count += len(present)
        self.digits += top_digits(float_keys(present))

    def median_ranks(self) -> list[int]:
        """The ranks whose values np.median averages (one rank for an odd count)."""
        return sorted({(self.count - 1) // 2, self.count // 2}) if self.count else []


def column_means(frame: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Each column's mean of its present values, computed by the imputer the preprocessor fits."""
    from sklearn.impute import SimpleImputer

    means = SimpleImputer(strategy="mean", keep_empty_features=True).fit(frame[columns]).statistics_
    return {name: float(value) for name, value in zip(columns, means, strict=True)}


def exact_medians(
    summaries: dict[str, NumericSummary], read: Callable[[], Iterable[pd.DataFrame]], collect: int = COLLECT
) -> dict[str, float]:
    """The median of each column's present values, exactly as numpy computes it (the mean of the two middle
    values for an even count; 0 for a column without values, as SimpleImputer(keep_empty_features=True)).
    `read()` yields the columns' batches again for the passes the summaries' histograms do not settle."""
    found = order_statistics(summaries, {name: s.median_ranks() for name, s in summaries.items()}, read, collect)
    medians = {}
    for name in summaries:
        values = found.get(name)
        if values is None:
            medians[name] = 0.0
            continue
        medians[name] = float(values[0]) if len(values) == 1 else float((values[0] + values[1]) / 2)
    return medians


def order_statistics(
    summaries: dict[str, NumericSummary],
    ranks: dict[str, list[int]],
    read: Callable[[], Iterable[pd.DataFrame]],
    collect: int = COLLECT,
) -> dict[str, np.ndarray]:
    """The present values of each column at the given 0-based ranks (columns without values are left out),
    exactly; `read()` yields the columns' batches again for the passes the summaries' histograms do not settle."""
    ranks = {name: wanted for name, wanted in ranks.items() if summaries[name].count and wanted}

    def keyed() -> Iterator[dict[Hashable, np.ndarray]]:
        for frame in read():
            out = {}
            for name in ranks:
                values = frame[name].to_numpy(dtype=np.float64)
                out[name] = float_keys(values[~np.isnan(values)])
            yield out

    found = select_keys(keyed, ranks, first={name: summaries[name].digits for name in ranks}, collect=collect)
    return {name: key_floats(np.array(keys, dtype=np.uint64)) for name, keys in found.items()}


def quantile_edges(columns: list[str], bins: int, read: Callable[[], Iterable[pd.DataFrame]]) -> dict[str, np.ndarray]:
    """Each numeric column's inner bin edges: its exact quantiles at 1/bins, 2/bins, ... of its present values
    (lower order statistics; repeated edges merged), from the batches `read()` yields (two passes or so)."""
    summaries = {name: NumericSummary() for name in columns}
    for frame in read():
        for name in columns:
            summaries[name].update(frame[name].to_numpy(dtype=np.float64))
    ranks = {
        name: sorted({int(share * (s.count - 1)) for share in np.arange(1, bins) / bins})
        for name, s in summaries.items()
    }
    found = order_statistics(summaries, ranks, read)
    return {name: np.unique(found.get(name, np.empty(0))) for name in columns}


def count_categories(frame: pd.DataFrame, columns: Iterable[str], counts: dict[str, dict[str, int]]) -> None:
    """Add each categorical column's value counts to `counts`, missing values as the preprocessor imputes
    them (MISSING)."""
    for name in columns:
        target = counts.setdefault(name, {})
        for value, n in frame[name].value_counts(dropna=False, sort=False).items():
            if n:  # a categorical column counts its unused categories too, as 0
                key = MISSING if pd.isna(value) else value
                target[key] = target.get(key, 0) + int(n)


# --- the fitted preprocessor from statistics ---------------------------------------------------------------


def statistics_frame(
    template: pd.DataFrame, numeric: dict[str, float], categories: dict[str, dict[str, int]], min_frequency: int
) -> pd.DataFrame:
    """A small frame on which fitting the preprocessor learns what fitting it on the whole table would, with
    the table's columns (`template`: its columns and types, no rows): each numeric column holds its fill (then
    NaN), so the imputer's mean or median is that fill exactly; each categorical column holds each category
    as often as the table does, up to min_frequency times, so the encoder finds the same categories and the
    same infrequent ones. A shorter column is padded with its first frequent category (a column without one
    holds every row of the table, so it is the longest); the other columns hold placeholders the preprocessor
    drops."""
    listed = {}
    for name, counts in categories.items():
        values = sorted(counts)
        # Missing values stay missing (NaN, as read from parquet), so that the imputer fills them with the very
        # object it fills the table's with: the fitted encoder's pickle then shares that object as the table's does.
        spelled = np.array([np.nan if v == MISSING else v for v in values], dtype=object)
        listed[name] = np.repeat(spelled, [min(counts[v], min_frequency) for v in values])
    rows = max([len(values) for values in listed.values()] + [1])
    columns: dict[str, object] = {}
    for name in template.columns:
        dtype = template[name].dtype
        if name in numeric:
            columns[name] = np.full(rows, np.nan)
            columns[name][0] = numeric[name]
        elif name in listed:
            values, counts = listed[name], categories[name]
            if len(values) < rows:
                pad = next(v for v in sorted(counts) if counts[v] >= min_frequency)
                pad = np.nan if pad == MISSING else pad
                values = np.concatenate([values, np.full(rows - len(values), pad, dtype=object)])
            columns[name] = values
        elif pd.api.types.is_numeric_dtype(dtype):
            columns[name] = pd.Series(np.zeros(rows), dtype=dtype)
        else:
            columns[name] = pd.Series([""] * rows, dtype=dtype)
    return pd.DataFrame(columns)


def fit_from_statistics(
    preprocessor,
    template: pd.DataFrame,
    fills: dict[str, float],
    categories: dict[str, dict[str, int]],
    read: Callable[[], Iterable[pd.DataFrame]],
):
    """`preprocessor` (unfitted, from churn.core.features.build_preprocessor) fitted as if on the whole table,
    through scikit-learn's public API only: fitted on `statistics_frame` (each numeric column's fill: the
    median or mean of the table; each categorical column's categories with their counts up to min_frequency),
    then its scaler, if any, refitted on the imputed batches that `read()` yields (StandardScaler.fit on the
    first, partial_fit on the others: a table of one batch is scaled exactly as when fitted whole)."""
    parts = {name: list(columns) for name, _, columns in preprocessor.transformers}
    numeric = parts.get("num", [])
    categorical = parts.get("cat", [])
    min_frequency = 1
    if categorical:
        encoder = preprocessor.get_params()["cat__onehot"]
        if not isinstance(encoder.min_frequency, int) or encoder.max_categories is not None:
            raise ValueError("fit_from_statistics needs an integer min_frequency and no max_categories")
        min_frequency = encoder.min_frequency
    sample = statistics_frame(
        template, {c: fills[c] for c in numeric}, {c: categories[c] for c in categorical}, min_frequency
    )
    preprocessor.fit(sample)
    steps = preprocessor.named_transformers_["num"].named_steps if numeric else {}
    if "scale" in steps:
        scaler, fitted = steps["scale"], False
        for frame in read():
            if len(frame):
                values = steps["impute"].transform(frame[numeric])
                if fitted:
                    scaler.partial_fit(values)
                else:  # forgets the statistics frame
                    scaler.fit(values)
                    fitted = True
    return preprocessor


# --- scores ------------------------------------------------------------------------------------------------


class ScoreCounts:
    """The test split's (score, label) pairs, kept as distinct pairs with counts: the ROC and precision-
    recall curves, their areas and every threshold metric computed from them with the counts as sample
    weights are those of the full arrays (the cumulative counts are the same integers), in memory bounded
    by the number of distinct scores, compacted as batches arrive."""

    def __init__(self, compact_at: int = 1 << 22) -> None:
        self.compact_at = compact_at
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending = 0
        self.rows = 0

    def update(self, labels: np.ndarray, scores: np.ndarray) -> None:
        labels = np.asarray(labels)
        scores = np.asarray(scores)
        self.rows += len(scores)
        for label in (0, 1):
            values, counts = np.unique(scores[labels == label], return_counts=True)
            self._parts.append((values, np.full(len(values), label, dtype=np.int8), counts.astype(np.int64)))
            self._pending += len(values)
        if self._pending > self.compact_at:
            self._compact()

    def _compact(self) -> None:
        if not self._parts:
            return
        scores = np.concatenate([p[0] for p in self._parts])
        labels = np.concatenate([p[1] for p in self._parts])
        counts = np.concatenate([p[2] for p in self._parts])
        parts = []
        for label in (0, 1):
            mine = labels == label
            values, inverse = np.unique(scores[mine], return_inverse=True)
            summed = np.bincount(inverse, weights=counts[mine], minlength=len(values)).astype(np.int64)
            parts.append((values, np.full(len(values), label, dtype=np.int8), summed))
        self._parts = parts
        self._pending = sum(len(p[0]) for p in parts)
        self.compact_at = max(self.compact_at, 2 * self._pending)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, scores, counts): one entry per distinct (score, label) pair."""
        self._compact()
        if not self._parts:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
        return (
            np.concatenate([p[1] for p in self._parts]).astype(np.int64),
            np.concatenate([p[0] for p in self._parts]),
            np.concatenate([p[2] for p in self._parts]),
        )


class ConfusionRows:
    """(actual, predicted) rows for DVC's confusion template, which draws one mark per row: one per test
    example in the split's order up to `limit` examples (kept as batches arrive); past that, `limit` rows in
    the confusion matrix's proportions (largest remainders), grouped by cell."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0
        self._pairs: list[np.ndarray] | None = []

    def update(self, actual: np.ndarray, predicted: np.ndarray) -> None:
        self.seen += len(actual)
        if self._pairs is None:
            return
        if self.seen > self.limit:
            self._pairs = None  # past the limit: the proportions, from the matrix
            return
        self._pairs.append(np.column_stack([actual, predicted]).astype(np.int64))

    def rows(self, matrix: np.ndarray) -> list[tuple[int, int]]:
        if self._pairs is not None:
            pairs = np.concatenate(self._pairs) if self._pairs else np.empty((0, 2), np.int64)
            return [(int(a), int(p)) for a, p in pairs.tolist()]
        counts = np.asarray(matrix, dtype=np.int64).ravel()
        exact = counts * self.limit / int(counts.sum())
        scaled = np.floor(exact).astype(np.int64)
        for index in np.argsort(-(exact - scaled), kind="stable")[: self.limit - int(scaled.sum())]:
            scaled[index] += 1
        cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
        return [cell for cell, n in zip(cells, scaled.tolist(), strict=True) for _ in range(n)]


class SeenKeys:
    """A set of 64-bit row keys that grows batch by batch (8 bytes a distinct key): sorted runs, merged when
    one is no longer than the next, so a lookup is a binary search in each of about log2(rows / batch) runs."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """True for each key already remembered (nothing is added)."""
        keys = np.asarray(keys, dtype=np.uint64)
        seen = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            seen |= run[at] == keys
        return seen

    def first_seen(self, keys: np.ndarray) -> np.ndarray:
        """True for each key seen neither earlier in `keys` nor in an earlier batch; remembers them all."""
        keys = np.asarray(keys, dtype=np.uint64)
        unique, first = np.unique(keys, return_index=True)
        seen = self.contains(unique)
        out = np.zeros(len(keys), dtype=bool)
        out[first[~seen]] = True
        if (~seen).any():
            self._runs.append(unique[~seen])
        while len(self._runs) > 1 and len(self._runs[-2]) <= len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")  # merges two runs
        return out
