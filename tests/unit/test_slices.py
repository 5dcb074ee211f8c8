"""Metrics per slice: categories and quantile bins, counted batch by batch; exact quantile edges; unknown
slice columns as one line; a floor on the worst slice's ROC AUC in the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import parse_params
from churn.core.slices import SliceCounts, bin_labels, worst_roc_auc
from churn.core.streaming import quantile_edges
from churn.errors import ParamError

FRAME = pd.DataFrame(
    {
        "plan": ["a", "a", "b", "b", "b", None, "a", "b"],
        "tenure": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, np.nan],
    }
)
LABELS = np.array([1, 0, 1, 1, 0, 0, 1, 0])
SCORES = np.array([0.9, 0.2, 0.8, 0.4, 0.3, 0.1, 0.6, 0.7])


def test_quantile_edges_are_exact_in_any_batches():
    values = pd.DataFrame({"x": np.arange(1.0, 101.0)})
    whole = quantile_edges(["x"], 4, lambda: [values])
    batches = quantile_edges(["x"], 4, lambda: [values.iloc[i : i + 7] for i in range(0, 100, 7)])
    assert whole["x"].tolist() == batches["x"].tolist() == [25.0, 50.0, 75.0]  # lower order statistics
    assert quantile_edges(["x"], 4, lambda: [pd.DataFrame({"x": [3.0] * 9})])["x"].tolist() == [3.0]


def test_bins_are_named_by_their_bounds():
    labels = bin_labels(np.array([0.5, 2.0, 3.0, 9.0, np.nan]), np.array([2.0, 4.0]))
    assert labels.tolist() == ["< 2", "[2, 4)", "[2, 4)", ">= 4", "missing"]


def test_slices_count_rows_positives_auc_and_recall_in_any_batches():
    edges = {"tenure": np.array([4.0])}
    whole = SliceCounts(["plan", "tenure"], edges)
    whole.update(FRAME, LABELS, SCORES)
    split = SliceCounts(["plan", "tenure"], edges)
    for start in range(0, len(FRAME), 3):
        split.update(FRAME.iloc[start : start + 3], LABELS[start : start + 3], SCORES[start : start + 3])
    report = whole.report(threshold=0.5)
    assert split.report(threshold=0.5) == report
    assert report["plan"]["a"] == {"rows": 3, "positives": 2, "roc_auc": 1.0, "recall": 1.0}
    assert report["plan"]["b"] == {"rows": 4, "positives": 2, "roc_auc": 0.75, "recall": 0.5}
    assert report["plan"]["missing"] == {"rows": 1, "positives": 0, "roc_auc": None, "recall": None}
    assert report["tenure"]["< 4"]["rows"] == 3 and report["tenure"][">= 4"]["rows"] == 4
    for column in report.values():  # every row in one slice value of each column
        assert sum(row["rows"] for row in column.values()) == len(FRAME)
    assert worst_roc_auc(report) == 0.75


def test_unknown_slice_column_is_one_line(params_raw):
    params_raw["evaluate"]["slices"] = ["contract_type", "region"]
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    assert str(caught.value) == (
        "params.yaml: evaluate.slices[1] must be a column of data.numerical or data.categorical, got 'region'"
    )


def test_the_gate_may_floor_the_worst_slice(params_raw):
    from churn.tracking.registry import gate

    params_raw["register"]["thresholds"]["worst_slice_roc_auc"] = {"min": 0.6}
    thresholds = parse_params(params_raw).register.thresholds
    metrics = {"roc_auc": 0.8, "log_loss": 0.4, "worst_slice_roc_auc": 0.55}
    assert not gate(metrics, thresholds)["passed"]
    assert gate({**metrics, "worst_slice_roc_auc": 0.65}, thresholds)["passed"]


def test_row_reader_takes_rows_across_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn.errors import DataError
    from churn.storage.parquet import RowReader

    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), path, row_group_size=3)
    reader = RowReader(path, 4, ["x"])
    assert [reader.take(n)["x"].tolist() for n in (5, 1, 3)] == [[0, 1, 2, 3, 4], [5], [6, 7, 8]]
    with pytest.raises(DataError, match="has more rows than the table read beside it"):
        reader.finish()
    with pytest.raises(DataError, match=r"has fewer rows than the table read beside it \(2 wanted\)"):
        reader.take(2)
