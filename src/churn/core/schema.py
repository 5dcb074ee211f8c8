"""The declared schema applied to raw rows: the one cleaning, shared by training (prepare, batch by batch: a
small table is one batch) and scoring (churn.tools.predict and the served model's input).

Numbers become floats (a blank is missing, other text an error naming its row), categories stripped text (a
blank is missing), the target 1 for data.positive_label and 0 for the other label. The text work is done by
Arrow's compute kernels, column at a time: at 100M rows the cleaning is where prepare's time goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn.config import DataParams
from churn.errors import DataError

log = logging.getLogger(__name__)


BLANK = ("", "na", "nan", "null", "none")  # read as missing, in any case
_BLANK = pa.array(BLANK)


def _text(column: pd.Series) -> pa.Array:
    """The column as stripped Arrow text, a missing value as ""."""
    try:
        text = pa.array(column, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects (a JSON request): as str() spells them
        text = pa.array(column.astype(object).where(column.notna(), "").astype(str).tolist(), type=pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(text, ""))


def _floats(text: pa.Array, blank: pa.Array) -> pa.Array | None:
    """The text as floats, `blank` cells missing; None when Arrow reads some other cell as no number."""
    try:
        return pc.cast(pc.if_else(blank, pa.scalar(None, pa.string()), text), pa.float64())
    except pa.ArrowInvalid:
        return None


def to_numbers(column: pd.Series, name: str, source: str) -> pd.Series:
    """Floats from numbers or text (a blank is missing); any other text is a DataError naming its row."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    text = _text(column)
    # Most columns hold numbers and empty cells only (a "nan" cell parses as NaN: missing, as BLANK has it).
    values = _floats(text, pc.equal(text, ""))
    if values is None:
        blank = pc.is_in(pc.utf8_lower(text), value_set=_BLANK)
        values = _floats(text, blank)
    if values is None:  # some text is not a number: find the first such row
        parsed = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False), dtype=object), errors="coerce")
        bad = parsed.isna().to_numpy() & ~blank.to_numpy(zero_copy_only=False)
        if not bad.any():  # a spelling Arrow refuses and pandas reads (e.g. "1_000"): pandas' value
            values = pa.array(parsed.to_numpy(dtype=np.float64), from_pandas=True)
        else:
            at = int(np.argmax(bad))
            row = column.index[at]  # a label: the row's position in the file, kept through any filtering
            raise DataError(
                source, f"column {name!r} must be numeric, found {column.iloc[at]!r} at data row {int(row) + 1}"
            ) from None
    return pd.Series(values.to_numpy(zero_copy_only=False), index=column.index, dtype="float64")


def as_objects(text: pa.Array | pa.ChunkedArray, missing: object = None) -> np.ndarray:
    """Arrow text as a numpy object array, `missing` for a null: each distinct value made a Python string once
    and shared by its rows (a category column has few), which is several times faster than one per row."""
    encoded = pc.dictionary_encode(text)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else pa.array([], text.type)
    if not isinstance(encoded, pa.DictionaryArray):  # no chunks: an empty column
        return np.empty(0, dtype=object)
    values = np.append(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object), [missing])
    indices = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return values[indices]


def to_categories(column: pd.Series) -> pd.Series:
    """Stripped text; None for a blank (as MLflow's string enforcement hands it to the fitted imputer)."""
    text = _text(column)
    values = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    return pd.Series(as_objects(values), index=column.index, dtype=object)


def clean_features(
    frame: pd.DataFrame, numerical: tuple[str, ...] | list[str], categorical: tuple[str, ...] | list[str], source: str
) -> pd.DataFrame:
    """The model's input columns typed the one way training and scoring both use: numbers as float (blank =
    missing, other text an error naming the row), categories as stripped text (blank = missing)."""
    columns = {name: to_numbers(frame[name], name, source) for name in numerical}
    columns.update({name: to_categories(frame[name]) for name in categorical})
    return pd.DataFrame(columns, index=frame.index)


@dataclass
class CleanBatches:
    """The raw table's declared columns, cleaned batch by batch (a small table is one batch): each batch on its
    own (a bad value is reported with its row in the file), and what needs the whole table (a label in some
    row, two classes, the positive label among them, a numeric column with at least one value) checked by
    `finish()` once the last batch is in."""

    data: DataParams
    source: str
    rows: int = 0
    unlabeled: int = 0
    classes: set[str] = field(default_factory=set)
    present: dict[str, int] = field(default_factory=dict)

    def clean(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The typed batch: ids as text, numbers as float, categories as text, target 1/0, rows with a blank
        target dropped. `raw` is indexed by data-row position in the file (0 = the first row below the header)."""
        data = self.data
        self.rows += len(raw)
        target = _text(raw[data.target])
        labelled = pc.not_equal(target, "").to_numpy(zero_copy_only=False)
        self.unlabeled += int((~labelled).sum())
        kept = raw.loc[labelled] if not labelled.all() else raw
        features = clean_features(kept, data.numerical, data.categorical, self.source)
        for name in data.numerical:
            self.present[name] = self.present.get(name, 0) + int(features[name].notna().sum())
        text = target.filter(pa.array(labelled)) if not labelled.all() else target
        self.classes |= set(pc.unique(text).to_pylist())
        if len(self.classes) > 2:
            classes = sorted(self.classes)
            raise DataError(
                self.source, f"target {data.target!r} must be binary, found {len(classes)} classes: {classes[:5]}"
            )
        columns: dict[str, pd.Series] = {c: kept[c].astype(str) for c in data.id_columns}
        columns.update(features.items())
        positive = pc.equal(text, str(data.positive_label)).to_numpy(zero_copy_only=False)
        columns[data.target] = pd.Series(positive.astype("int64"), index=kept.index)
        return pd.DataFrame(columns).reset_index(drop=True)

    def labels(self) -> tuple[str, str]:
        """The target's (negative, positive) labels as the file spells them (after finish())."""
        positive = str(self.data.positive_label)
        return next(c for c in sorted(self.classes) if c != positive), positive

    def finish(self) -> tuple[str, str]:
        """Check what needs the whole table; returns labels()."""
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
        return self.labels()


def clean_table(raw: pd.DataFrame, data: DataParams, source: str) -> tuple[pd.DataFrame, tuple[str, str]]:
    """A whole table in memory cleaned as prepare cleans it (CleanBatches, one batch): (clean rows, labels)."""
    cleaner = CleanBatches(data, source)
    clean = cleaner.clean(raw)
    return clean, cleaner.finish()
