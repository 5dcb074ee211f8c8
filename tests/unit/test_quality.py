"""Data quality counts (core.quality): repeated rows as prepare finds them, the report, its metrics and its
warnings (test rows seen in training are counted by churn.core.split: tests/unit/test_split.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.core import quality
from churn.core.split import row_keys
from churn.core.streaming import SeenKeys

COLUMNS = ["age", "plan", "churn"]


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", *COLUMNS])


def repeats(table: pd.DataFrame) -> list[bool]:
    """What prepare counts as a repeat: a row whose identity keys were seen before (churn.core.split)."""
    return (~SeenKeys().first_seen(row_keys(table[COLUMNS], seed=0))).tolist()


def test_a_repeat_is_the_same_features_and_target_whatever_the_id():
    table = frame([("a", 30.0, "basic", 1), ("b", 30.0, "basic", 1), ("c", 30.0, "basic", 0), ("a", 41.0, None, 0)])
    assert repeats(table) == [False, True, False, False]


def test_missing_values_compare_equal():
    table = frame([("a", np.nan, None, 1), ("b", np.nan, None, 1)])
    assert repeats(table) == [False, True]


def _report(**counts) -> dict:
    """3 train rows (1 positive), 2 test rows (1 positive), 1 test row identical to a train row."""
    base = {"rows_raw": 10, "blank_target": 0, "duplicates": 0, "dropped": 0}
    sides = {"rows": {"train": 3, "test": 2}, "positives": {"train": 1, "test": 1}, "test_rows_in_train": 1}
    return quality.report(**{**base, **counts}, **sides, labels=("No", "Yes"))


def test_report_counts_and_labels_as_spelled():
    report = _report(rows_raw=8, blank_target=1, duplicates=2, dropped=2)
    assert report == {
        "rows_raw": 8,
        "rows_blank_target": 1,
        "rows_duplicate": 2,
        "rows_duplicate_dropped": 2,
        "rows_used": 5,
        "test_rows_in_train": 1,
        "rows_test": 2,
        "rows_per_label": {"No": 3, "Yes": 2},
        "class_shares": {"train": {"No": 0.666667, "Yes": 0.333333}, "test": {"No": 0.5, "Yes": 0.5}},
    }
    assert quality.metrics(report, "Yes") == {
        "rows_raw": 8,
        "rows_train": 3,
        "rows_test": 2,
        "positive_rate": 0.4,
        "rows_blank_target": 1,
        "rows_duplicate": 2,
        "rows_duplicate_dropped": 2,
        "test_rows_in_train": 1,
        "positive_share_train": 0.333333,
        "positive_share_test": 0.5,
    }
    assert quality.labels_of(report, "Yes") == ("No", "Yes")
    assert quality.labels_of({"rows_per_label": {"0": 3, "1": 2}}, 1) == ("0", "1")


def test_warnings_only_above_the_share():
    report = _report(rows_raw=100, blank_target=2, duplicates=0)
    lines = quality.warnings(report, "churn", 0.01, drop_duplicates=False)
    assert len(lines) == 2
    assert lines[0] == "2 of 100 rows (2.0%) have a blank churn and were dropped"
    assert lines[1].startswith("1 of 2 test rows (50.0%) are identical to a train row")
    assert "prepare.drop_duplicates: true" in lines[1]
    assert quality.warnings(report, "churn", 0.5, drop_duplicates=False) == []


def test_duplicate_warning_says_what_was_done():
    report = _report(rows_raw=100, duplicates=30, dropped=30)
    kept = quality.warnings(report, "churn", 0.1, drop_duplicates=False)
    dropped = quality.warnings(report, "churn", 0.1, drop_duplicates=True)
    assert "30 of 100 rows (30.0%) repeat an earlier row's features and churn; kept" in kept[0]
    assert dropped[0].endswith("dropped before the split (prepare.drop_duplicates)")
