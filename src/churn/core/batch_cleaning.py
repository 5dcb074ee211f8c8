"""validate_and_clean (churn.core.schema) for a raw table that arrives in record batches: the large-data path's
prepare. Each batch is cleaned as the default path cleans the whole table; what needs the whole table is checked
once the last batch is in."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from churn.config import DataParams
from churn.core.schema import clean_features
from churn.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class CleanBatches:
    """validate_and_clean for a table that arrives in batches: each batch is cleaned on its own (a bad value
    is reported with its row in the file), and what needs the whole table (two classes, the positive label
    among them, a numeric column with at least one value) is checked by `finish()` at the end."""

    data: DataParams
    source: str
    rows: int = 0
    unlabeled: int = 0
    classes: set[str] = field(default_factory=set)
    present: dict[str, int] = field(default_factory=dict)

    def clean(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The typed batch: ids as text, numbers as float, categories as text, target 1/0. `raw` is indexed
        by data-row position in the file (0 = the first row below the header)."""
        data = self.data
        self.rows += len(raw)
        target = raw[data.target].astype(str).str.strip()
        unlabeled = target.eq("")
        self.unlabeled += int(unlabeled.sum())
        kept = raw.loc[~unlabeled.to_numpy()]
        features = clean_features(kept, data.numerical, data.categorical, self.source)
        for name in data.numerical:
            self.present[name] = self.present.get(name, 0) + int(features[name].notna().sum())
        text = target[~unlabeled.to_numpy()]
        self.classes |= set(text.unique())
        if len(self.classes) > 2:
            classes = sorted(self.classes)
            raise DataError(
                self.source, f"target {data.target!r} must be binary, found {len(classes)} classes: {classes[:5]}"
            )
        columns: dict[str, pd.Series] = {c: kept[c].astype(str) for c in data.id_columns}
        columns.update(features.items())
        columns[data.target] = (text == str(data.positive_label)).astype("int64")
        return pd.DataFrame(columns).reset_index(drop=True)

    def labels(self) -> tuple[str, str]:
        """The target's (negative, positive) labels as the file spells them (after finish())."""
        positive = str(self.data.positive_label)
        return next(c for c in sorted(self.classes) if c != positive), positive

    def finish(self) -> None:
        data, source = self.data, self.source
        if self.rows and self.unlabeled == self.rows:
            raise DataError(source, f"target {data.target!r} is empty in every row")
        if self.unlabeled:
            log.info("%s: dropped %d rows with no %s", source, self.unlabeled, data.target)
        for name in data.numerical:
            if not self.present.get(name):
                raise DataError(
                    source, f"column {name!r} has no values; expected numbers (or drop it from data.numerical)"
                )
        classes = sorted(self.classes)
        if len(classes) < 2:
            raise DataError(
                source, f"target {data.target!r} has one class ({classes[0] if classes else 'none'}); need two"
            )
        if str(data.positive_label) not in classes:
            raise DataError(
                source, f"data.positive_label {data.positive_label!r} is not a value of {data.target!r} ({classes})"
            )
