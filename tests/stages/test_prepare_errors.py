"""A bad raw table stops prepare with one line naming the file, and leaves no output behind.

Most tests use `migrated_store` (a copy of a ready MLflow store): they are about prepare, not about the store.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from churn.config import load_params
from churn.errors import DataError
from churn.pipeline import prepare
from tests.conftest import project_env, write_params

RAW = "data/raw/customers.csv"


def _rewrite(workspace, frame: pd.DataFrame) -> None:
    frame.to_csv(workspace / RAW, index=False, float_format="%.2f")


def _assert_nothing_published(workspace) -> None:
    assert list((workspace / "data").rglob("*.parquet")) == []
    assert not (workspace / "data" / "prepared").exists()
    assert list(workspace.rglob(".staging-*")) == []


def _assert_run_failed(message: str) -> None:
    """The stage's MLflow run (and its parent) ended FAILED, with the error as a tag."""
    from mlflow import MlflowClient

    from churn.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("churn")
    runs = {r.data.tags.get("churn.role", "stage"): r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"pipeline", "stage"}
    assert runs["stage"].info.status == "FAILED"
    assert runs["stage"].data.tags["error"] == message
    assert runs["pipeline"].info.status == "FAILED"


def _run_prepare(workspace) -> DataError:
    with pytest.raises(DataError) as caught:
        prepare.run(load_params())
    message = str(caught.value)
    assert message.startswith(f"{RAW}: ")
    assert "\n" not in message
    _assert_nothing_published(workspace)
    _assert_run_failed(message)
    return caught.value


def test_missing_column(workspace, migrated_store, customers):
    _rewrite(workspace, customers.drop(columns=["tenure"]))
    error = _run_prepare(workspace)
    assert "missing column 'tenure'" in str(error)


def test_text_in_numeric_column(workspace, migrated_store, customers):
    ages = customers["age"].astype(str).tolist()
    ages[4] = "forty"
    _rewrite(workspace, customers.assign(age=ages))
    message = str(_run_prepare(workspace))
    assert "'age'" in message
    assert "'forty'" in message
    assert "data row 5" in message


def test_empty_raw_file(workspace, migrated_store):
    (workspace / RAW).write_bytes(b"")
    assert "empty" in str(_run_prepare(workspace))


def test_one_class_target(workspace, migrated_store, customers):
    _rewrite(workspace, customers.assign(churn=0))
    assert "one class" in str(_run_prepare(workspace))


def _one_class_in_test(workspace, customers) -> int:
    """The raw table relabelled so that every positive row lands in train; returns the test split's rows."""
    from churn.core.split import in_test, row_keys

    settings = load_params().prepare
    to_test = in_test(row_keys(customers[["customer_id"]].astype(str), settings.seed), settings.test_size)
    _rewrite(workspace, customers.assign(churn=(~to_test & (customers["churn"] == 1)).astype(int)))
    return int(to_test.sum())


@pytest.mark.parametrize("batch_rows", [1_000_000, 7], ids=["one batch", "batches of 7"])
def test_a_split_side_with_one_class(workspace, migrated_store, customers, params_raw, batch_rows):
    params_raw["resources"]["batch_rows"] = batch_rows
    write_params(workspace, params_raw)
    rows = _one_class_in_test(workspace, customers)
    message = str(_run_prepare(workspace))
    assert message == (
        f"{RAW}: all {rows} rows of the test split have churn '0'; each side needs both classes: "
        "add rows, or change prepare.test_size or prepare.seed"
    )


def test_successful_prepare_publishes_both_splits(workspace, migrated_store):
    # The contrast to the cases above: the same workspace, untouched, does produce the outputs.
    prepare.run(load_params())
    assert sorted(p.name for p in (workspace / "data" / "prepared").iterdir()) == ["test.parquet", "train.parquet"]
    assert list(workspace.rglob(".staging-*")) == []


def _cli(workspace, **extra: str) -> subprocess.CompletedProcess:
    env = project_env(MLFLOW_TRACKING_URI=f"sqlite:///{workspace / 'mlflow.db'}", DVC_ROOT=str(workspace), **extra)
    return subprocess.run(
        [sys.executable, "-m", "churn.pipeline.prepare"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


MISSING_CONTRACT = f"error: {RAW}: missing column 'contract_type' declared in params.yaml data block"


@pytest.mark.slow
def test_cli_prints_one_error_line_and_exits_1(workspace, migrated_store, customers):
    _rewrite(workspace, customers.drop(columns=["contract_type"]))
    # INFO logging (the default) shares stderr by design; at WARNING only the error itself remains.
    result = _cli(workspace, CHURN_LOG_LEVEL="WARNING")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [MISSING_CONTRACT]
    _assert_nothing_published(workspace)


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_1_for_a_side_with_one_class(workspace, migrated_store, customers):
    rows = _one_class_in_test(workspace, customers)
    result = _cli(workspace, CHURN_LOG_LEVEL="WARNING")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {RAW}: all {rows} rows of the test split have churn '0'; each side needs both classes: "
        "add rows, or change prepare.test_size or prepare.seed"
    ]
    _assert_nothing_published(workspace)


@pytest.mark.slow
def test_cli_prints_one_error_line_on_a_new_store(workspace, customers):
    _rewrite(workspace, customers.drop(columns=["contract_type"]))
    assert not (workspace / "mlflow.db").exists()
    result = _cli(workspace, CHURN_LOG_LEVEL="WARNING")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [MISSING_CONTRACT]
