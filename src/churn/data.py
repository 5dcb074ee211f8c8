"""Read the raw table against the declared schema, clean it, and split it. Pure functions except `read_raw`."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from churn.errors import DataError
from churn.params import DataParams

log = logging.getLogger(__name__)


def read_raw(path: str | Path, data: DataParams) -> pd.DataFrame:
    """Read only the declared columns of a CSV; a missing file, column or row is a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "file not found (check data.raw_path in params.yaml)")
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty; expected a CSV with a header row")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise DataError(str(path), "file is empty; expected a CSV with a header row") from None
    wanted = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(str(path), f"missing column {missing[0]!r} declared in params.yaml data block")
    # Everything is read as text: validate_and_clean decides the types, so a stray word in a numeric
    # column is reported with its row instead of silently turning the column into text.
    frame = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False, engine="pyarrow")
    if frame.empty:
        raise DataError(str(path), "no data rows below the header")
    log.info("read %s: %d rows, %d columns", path, len(frame), len(wanted))
    return frame[wanted]


def _to_numeric(column: pd.Series, name: str, source: str) -> pd.Series:
    text = column.str.strip()
    blank = text.eq("") | text.str.lower().isin(["na", "nan", "null", "none"])
    values = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = values.isna() & ~blank
    if bad.any():
        row = bad.idxmax()  # a label: the row's position in the file, kept through the filtering above
        raise DataError(
            source, f"column {name!r} must be numeric, found {column.loc[row]!r} at data row {int(row) + 1}"
        )
    if values.isna().all():
        raise DataError(source, f"column {name!r} has no values; expected numbers (or drop it from data.numerical)")
    return values.astype("float64")


def _to_category(column: pd.Series) -> pd.Series:
    text = column.str.strip()
    return text.where(text.ne(""), None).astype(object)


def encode_target(column: pd.Series, data: DataParams, source: str) -> pd.Series:
    """Map the target to 1 (the positive label) and 0; exactly two classes are required."""
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
    return (text == positive).astype("int64")


def validate_and_clean(raw: pd.DataFrame, data: DataParams, source: str) -> pd.DataFrame:
    """Typed copy of the declared columns: numbers as float (blank = missing), categories as text, target 0/1."""
    target = raw[data.target].astype(str).str.strip()
    unlabeled = target.eq("")
    if unlabeled.all():
        raise DataError(source, f"target {data.target!r} is empty in every row")
    if unlabeled.any():
        log.warning("%s: dropping %d rows with no %s", source, int(unlabeled.sum()), data.target)
    kept = raw.loc[~unlabeled.to_numpy()]  # index = row position in the file, for error messages
    columns: dict[str, pd.Series] = {c: kept[c].astype(str) for c in data.id_columns}
    columns.update({c: _to_numeric(kept[c], c, source) for c in data.numerical})
    columns.update({c: _to_category(kept[c]) for c in data.categorical})
    columns[data.target] = encode_target(kept[data.target], data, source)
    return pd.DataFrame(columns).reset_index(drop=True)


def split(frame: pd.DataFrame, target: str, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded train/test split."""
    from sklearn.model_selection import train_test_split

    counts = frame[target].value_counts()
    if counts.min() < 2 or len(frame) * test_size < 2 or len(frame) * (1 - test_size) < 2:
        raise DataError("prepare", f"too few rows to split ({len(frame)} rows, smallest class {int(counts.min())})")
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame[target])
    return train.reset_index(drop=True), test.reset_index(drop=True)
