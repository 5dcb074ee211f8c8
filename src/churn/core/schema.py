"""The declared schema applied to raw rows: the one cleaning shared by training (prepare) and scoring
(churn.tools.predict and the served model's input), and target encoding."""

from __future__ import annotations

import logging

import pandas as pd

from churn.config import DataParams
from churn.errors import DataError

log = logging.getLogger(__name__)


BLANK = ("", "na", "nan", "null", "none")  # read as missing, in any case


def _text(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def to_numbers(column: pd.Series, name: str, source: str) -> pd.Series:
    """Floats from numbers or text (a blank is missing); any other text is a DataError naming its row."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    text = _text(column)
    blank = text.str.lower().isin(BLANK)
    values = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = values.isna() & ~blank
    if bad.any():
        row = bad.idxmax()  # a label: the row's position in the file, kept through any filtering
        raise DataError(
            source, f"column {name!r} must be numeric, found {column.loc[row]!r} at data row {int(row) + 1}"
        )
    return values.astype("float64")


def to_categories(column: pd.Series) -> pd.Series:
    """Stripped text; None for a blank (as MLflow's string enforcement hands it to the fitted imputer)."""
    return pd.Series([v if v else None for v in _text(column).tolist()], index=column.index, dtype=object)


def clean_features(
    frame: pd.DataFrame, numerical: tuple[str, ...] | list[str], categorical: tuple[str, ...] | list[str], source: str
) -> pd.DataFrame:
    """The model's input columns typed the one way training and scoring both use: numbers as float (blank =
    missing, other text an error naming the row), categories as stripped text (blank = missing)."""
    columns = {name: to_numbers(frame[name], name, source) for name in numerical}
    columns.update({name: to_categories(frame[name]) for name in categorical})
    return pd.DataFrame(columns, index=frame.index)


def target_labels(column: pd.Series, data: DataParams, source: str) -> tuple[str, str]:
    """The target's two labels as the file spells them, (negative, positive); exactly two classes are required."""
    text = column.astype(str).str.strip()
    classes = sorted(set(text.unique()) - {""})
    positive = str(data.positive_label)
    if len(classes) < 2:
        raise DataError(source, f"target {data.target!r} has one class ({classes[0] if classes else 'none'}); need two")
    if len(classes) > 2:
        raise DataError(source, f"target {data.target!r} must be binary, found {len(classes)} classes: {classes[:5]}")
    if positive not in classes:
        raise DataError(
            source, f"data.positive_label {data.positive_label!r} is not a value of {data.target!r} ({classes})"
        )
    return next(c for c in classes if c != positive), positive


def encode_target(column: pd.Series, data: DataParams, source: str) -> pd.Series:
    """Map the target to 1 (the positive label) and 0; exactly two classes are required."""
    _, positive = target_labels(column, data, source)
    return (column.astype(str).str.strip() == positive).astype("int64")


def validate_and_clean(raw: pd.DataFrame, data: DataParams, source: str) -> pd.DataFrame:
    """Typed copy of the declared columns: numbers as float (blank = missing), categories as text, target 0/1."""
    target = raw[data.target].astype(str).str.strip()
    unlabeled = target.eq("")
    if unlabeled.all():
        raise DataError(source, f"target {data.target!r} is empty in every row")
    if unlabeled.any():  # counted and, above prepare.warn_share, warned about by prepare (core.quality)
        log.info("%s: dropping %d rows with no %s", source, int(unlabeled.sum()), data.target)
    kept = raw.loc[~unlabeled.to_numpy()]  # index = row position in the file, for error messages
    features = clean_features(kept, data.numerical, data.categorical, source)
    for name in data.numerical:
        if features[name].isna().all():
            raise DataError(source, f"column {name!r} has no values; expected numbers (or drop it from data.numerical)")
    columns: dict[str, pd.Series] = {c: kept[c].astype(str) for c in data.id_columns}
    columns.update(features.items())
    columns[data.target] = encode_target(kept[data.target], data, source)
    return pd.DataFrame(columns).reset_index(drop=True)
