"""prepare's data-quality report: repeated rows dropped before the split (or kept and counted), test rows that
repeat a train row, blank targets, the rows of each label as spelled; in reports/data_quality.json, in MLflow,
and as warnings above prepare.warn_share."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from churn.config import load_params
from churn.pipeline import prepare
from tests.conftest import write_params

RAW = "data/raw/customers.csv"
FEATURES = ["age", "tenure", "monthly_charges", "total_charges", "gender", "contract_type", "payment_method"]


@pytest.fixture
def messy(workspace, customers, params_raw):
    """400 customers labelled Yes/No, plus 100 repeats of earlier rows under new ids and 8 rows without a label."""
    table = customers.assign(churn=customers["churn"].map({1: "Yes", 0: "No"}))
    repeats = table.head(100).assign(customer_id=[f"R{i}" for i in range(100)])
    blanks = table.tail(8).assign(customer_id=[f"B{i}" for i in range(8)], churn="")
    pd.concat([table, repeats, blanks]).to_csv(workspace / RAW, index=False, float_format="%.2f")
    params_raw["data"]["positive_label"] = "Yes"
    return params_raw


def _prepare(workspace, params_raw, drop: bool, batch_rows: int = 1_000_000) -> dict:
    params_raw["prepare"]["drop_duplicates"] = drop
    params_raw["resources"]["batch_rows"] = batch_rows
    write_params(workspace, params_raw)
    prepare.run(load_params())
    return json.loads((workspace / "reports" / "data_quality.json").read_text())


def _stage_metrics() -> dict[str, float]:
    from mlflow import MlflowClient

    from churn.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("churn")
    runs = client.search_runs([experiment.experiment_id], "tags.`dvc.stage` = 'prepare'", order_by=["start_time DESC"])
    return runs[0].data.metrics


def test_repeats_are_dropped_before_the_split(workspace, migrated_store, messy, caplog):
    with caplog.at_level(logging.WARNING):
        report = _prepare(workspace, messy, drop=True)
    assert report["rows_raw"] == 508
    assert report["rows_blank_target"] == 8
    assert report["rows_duplicate"] == report["rows_duplicate_dropped"] == 100
    assert report["rows_used"] == 400
    assert report["test_rows_in_train"] == 0
    assert sum(report["rows_per_label"].values()) == 400 and set(report["rows_per_label"]) == {"No", "Yes"}
    train = pd.read_parquet(workspace / "data/prepared/train.parquet")
    test = pd.read_parquet(workspace / "data/prepared/test.parquet")
    assert len(train) + len(test) == 400
    assert test.merge(train, on=[*FEATURES, "churn"]).empty  # no test row is identical to a train row
    shares = report["class_shares"]
    assert shares["test"]["Yes"] == round((test["churn"] == 1).mean(), 6)
    assert shares["train"]["Yes"] == round((train["churn"] == 1).mean(), 6)
    assert shares["train"]["No"] == round(1 - shares["train"]["Yes"], 6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("8 of 508 rows (1.6%) have a blank churn and were dropped" in w for w in warnings), warnings
    assert any("100 of 500 rows (20.0%) repeat an earlier row's" in w and "dropped before" in w for w in warnings)
    metrics = _stage_metrics()
    assert metrics["prepare.rows_duplicate_dropped"] == 100 and metrics["prepare.rows_blank_target"] == 8
    assert metrics["prepare.positive_share_test"] == shares["test"]["Yes"]
    assert metrics["prepare.positive_share_train"] == shares["train"]["Yes"]


@pytest.mark.parametrize("batch_rows", [1_000_000, 7], ids=["one batch", "batches of 7"])
def test_kept_repeats_show_up_as_test_rows_seen_in_training(workspace, migrated_store, messy, caplog, batch_rows):
    with caplog.at_level(logging.WARNING):
        report = _prepare(workspace, messy, drop=False, batch_rows=batch_rows)
    assert report["rows_duplicate"] == 100 and report["rows_duplicate_dropped"] == 0
    assert report["rows_used"] == 500
    train = pd.read_parquet(workspace / "data/prepared/train.parquet")
    test = pd.read_parquet(workspace / "data/prepared/test.parquet")
    identity = [*FEATURES, "churn"]
    assert report["test_rows_in_train"] == len(test.merge(train[identity].drop_duplicates(), on=identity)) > 0
    assert _stage_metrics()["prepare.test_rows_in_train"] == report["test_rows_in_train"]
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "identical to a train row" in warnings and "kept (set prepare.drop_duplicates: true" in warnings


def test_a_clean_table_warns_about_nothing(workspace, migrated_store, params_raw, caplog):
    with caplog.at_level(logging.WARNING):
        report = _prepare(workspace, params_raw, drop=True)
    assert (report["rows_blank_target"], report["rows_duplicate"], report["test_rows_in_train"]) == (0, 0, 0)
    assert report["rows_per_label"].keys() == {"0", "1"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("churn")] == []
