"""The train/test split, one rule at every size: a row goes to the test split when a 64-bit hash of its id
columns (data.id_columns; of its features and target when there are none), keyed by prepare.seed, falls in
the lowest prepare.test_size share of the range. A row's side depends on that row alone, not on the batch
size nor on the other rows: when version 2 of the data is version 1 plus new rows, every version-1 row keeps
its side, so models trained on either version are compared on test rows neither of them saw.

The rule ignores the class, and the test split's size is test_size only up to binomial noise: on the bundled
20,000-row sample, 3,872 test rows, positive share 0.2573 in train and 0.2546 in test (0.26 points apart,
about a third of the noise's standard deviation). prepare reports the shares per side and stops when a side
gets fewer than 2 rows or one class.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from churn.config import DataParams, PrepareParams
from churn.errors import DataError

log = logging.getLogger(__name__)

SIDES = ("train", "test")


def row_keys(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A 64-bit hash of each row of `frame`, keyed by the seed: the same values always give the same key,
    whatever else is in the table and however it is batched."""
    key = hashlib.sha256(f"churn-split:{seed}".encode()).hexdigest()[:16]
    return pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy(np.uint64)


def in_test(keys: np.ndarray, test_size: float) -> np.ndarray:
    """True for the keys in the lowest `test_size` share of the 64-bit range."""
    return keys < np.uint64(min(int(test_size * 2.0**64), 2**64 - 1))


def identity(data: DataParams) -> list[str]:
    """The columns that make two rows identical: what the model sees and is scored on, never the ids."""
    return [*data.features, data.target]


class Sides:
    """The split of a cleaned table that arrives in batches (a small table is one batch), and what each side
    got: rows, positives, and the test rows identical to a train row (found through the rows' identity keys,
    8 bytes a row, once all batches are in: each train batch's keys looked up among the test keys, sorted once.
    A growing set of the train keys probed batch by batch cost more per row the larger the table)."""

    def __init__(self, data: DataParams, settings: PrepareParams, source: str) -> None:
        self.data, self.settings, self.source = data, settings, source
        self.rows = dict.fromkeys(SIDES, 0)
        self.positives = dict.fromkeys(SIDES, 0)
        self._train_keys: list[np.ndarray] = []
        self._test_keys: list[np.ndarray] = []

    def split(self, frame: pd.DataFrame, identities: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train, test): the batch's rows on each side, in their order. `identities`: row_keys of the batch's
        identity columns with this seed, when the caller has them already."""
        data, seed = self.data, self.settings.seed
        if identities is None:
            identities = row_keys(frame[identity(data)], seed)
        keys = row_keys(frame[list(data.id_columns)], seed) if data.id_columns else identities
        to_test = in_test(keys, self.settings.test_size)
        labels = frame[data.target].to_numpy()
        for side, rows in (("train", ~to_test), ("test", to_test)):
            self.rows[side] += int(rows.sum())
            self.positives[side] += int(labels[rows].sum())
        self._train_keys.append(identities[~to_test])
        self._test_keys.append(identities[to_test])
        return frame.loc[~to_test].reset_index(drop=True), frame.loc[to_test].reset_index(drop=True)

    def test_rows_in_train(self) -> int:
        """How many test rows equal a train row in features and target (once all batches are in)."""
        test, repeats = np.unique(np.concatenate([np.empty(0, np.uint64), *self._test_keys]), return_counts=True)
        if not len(test):
            return 0
        in_train = np.zeros(len(test), dtype=bool)
        for keys in self._train_keys:
            keys = np.sort(keys)  # sorted lookups walk the test keys forward: fewer cache misses
            at = np.minimum(np.searchsorted(test, keys), len(test) - 1)
            in_train[at[test[at] == keys]] = True
        return int(repeats[in_train].sum())

    def positive_share(self, side: str) -> float:
        return self.positives[side] / self.rows[side] if self.rows[side] else 0.0

    def check(self, labels: tuple[str, str]) -> None:
        """A DataError when a side has fewer than 2 rows or rows of one class only (`labels`: (negative,
        positive) as the file spells them)."""
        total, size = sum(self.rows.values()), self.settings.test_size
        fix = "add rows, or change prepare.test_size or prepare.seed"
        for side in SIDES:
            rows, positives = self.rows[side], self.positives[side]
            if rows < 2:
                raise DataError(
                    self.source,
                    f"the {side} split got {rows} of the {total} rows (prepare.test_size {size}); "
                    f"each side needs 2 or more: {fix}",
                )
            if positives in (0, rows):
                label = labels[1] if positives else labels[0]
                raise DataError(
                    self.source,
                    f"all {rows} rows of the {side} split have {self.data.target} {label!r}; "
                    f"each side needs both classes: {fix}",
                )
        log.info(
            "split: %d train rows (%.4f %s), %d test rows (%.4f %s)",
            *(v for side in SIDES for v in (self.rows[side], self.positive_share(side), labels[1])),
        )
