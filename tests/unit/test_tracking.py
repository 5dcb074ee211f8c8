"""Where the MLflow store is, how URIs are printed, how stage runs are grouped, and failing fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from churn.errors import ChurnError
from churn.tracking import runs, store
from churn.tracking.runs import pipeline_key
from churn.tracking.store import redact, tracking_uri


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path.resolve()


def test_default_store_is_sqlite_under_dvc_root(root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path / "..")  # the current directory must not matter
    assert tracking_uri() == f"sqlite:///{root}/mlflow.db"
    assert store.repo_root() == root


def test_relative_sqlite_uri_is_made_absolute_against_root(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert tracking_uri() == f"sqlite:///{root}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/runs.db")
    assert tracking_uri() == f"sqlite:///{root}/stores/runs.db"


@pytest.mark.parametrize(
    "uri",
    ["sqlite:////var/tmp/elsewhere.db", "http://mlflow.example:5000", "postgresql://u@db:5432/mlflow"],
)
def test_absolute_and_server_uris_are_kept(root, monkeypatch, uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking_uri() == uri


def test_relative_file_uri_and_bare_path_are_madeabsolute_uri(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:mlruns")
    uri = tracking_uri()
    assert uri.startswith("file:")
    assert uri.removeprefix("file:").removeprefix("//") == f"{root}/mlruns"  # file:/x and file:///x are both fine
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlruns")
    assert tracking_uri() == f"{root}/mlruns"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("postgresql://mlflow:pa55word@db.internal:5432/mlflow", "postgresql://mlflow:***@db.internal:5432/mlflow"),
        ("https://token:@host/path", "https://token:***@host/path"),
        ("http://mlflow.example:5000", "http://mlflow.example:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_hides_passwords(uri, shown):
    assert redact(uri) == shown


@pytest.fixture
def no_pipeline_env(monkeypatch):
    for var in ("CHURN_PIPELINE_KEY", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runs, "_dvc_ancestor", lambda: None)


def test_pipeline_key_uses_dvc_experiment_name_and_baseline(no_pipeline_env, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-fish")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    key, name = pipeline_key()
    assert name == "lucky-fish"
    assert "lucky-fish" in key
    assert "0123abc" in key
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "4567def")
    assert pipeline_key()[0] != key  # the same name on another baseline is another execution


def test_pipeline_key_override_wins(no_pipeline_env, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-fish")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "nightly-42")
    assert pipeline_key() == ("nightly-42", "nightly-42")


def test_pipeline_key_of_a_stage_run_by_hand_is_none(no_pipeline_env):
    assert pipeline_key() is None


def test_pipeline_key_of_dvc_repro_names_the_dvc_process(no_pipeline_env, monkeypatch):
    monkeypatch.setattr(runs, "_dvc_ancestor", lambda: (4242, 1700000000.5))
    key, name = pipeline_key()
    assert key.startswith("repro:")
    assert key.endswith(":4242:1700000000.500")
    assert name.startswith("repro@")


def test_connect_to_unreachable_server_fails_fast_naming_the_url(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    # connect() sets these for MLflow's HTTP client; set them here so monkeypatch restores them afterwards.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    started = time.monotonic()
    with pytest.raises(ChurnError) as caught:
        store.connect("churn")
    assert time.monotonic() - started < 20
    message = str(caught.value)
    assert "http://127.0.0.1:9" in message
    assert "\n" not in message
    assert not (root / "mlflow.db").exists()


def test_connect_error_does_not_print_the_password(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    with pytest.raises(ChurnError) as caught:
        store.connect("churn")
    assert "s3cret" not in str(caught.value)
    assert "http://alice:***@127.0.0.1:9" in str(caught.value)


def test_flatten_params_for_logging():
    flat = runs.flatten({"data": {"numerical": ("a", "b"), "target": "churn"}, "model": {"C": 1.0}})
    assert flat == {"data.numerical": "a,b", "data.target": "churn", "model.C": "1.0"}


# --- the request budget: records in as few log_batch calls as MLflow's limits allow ------------------


def test_batches_fill_each_call_up_to_mlflows_limits():
    params, metrics, tags = list(range(250)), list(range(2500)), list(range(30))
    calls = list(runs.batches(params, metrics, tags))
    for chunk_params, chunk_metrics, chunk_tags in calls:
        assert len(chunk_params) <= 100 and len(chunk_tags) <= 100 and len(chunk_metrics) <= 1000
        assert len(chunk_params) + len(chunk_metrics) + len(chunk_tags) <= 1000
    assert [x for call in calls for x in call[0]] == params
    assert [x for call in calls for x in call[1]] == metrics
    assert [x for call in calls for x in call[2]] == tags
    assert len(calls) == 3  # 250 params need three calls; the metrics and tags fit beside them
    assert list(runs.batches([], [], [])) == []
    assert len(list(runs.batches(list(range(40)), list(range(900)), list(range(20))))) == 1


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({"prepare": "FINISHED", "train": "FINISHED"}, "FINISHED"),
        ({"prepare": "FINISHED", "train": "FAILED"}, "FAILED"),
        ({"prepare": "KILLED", "train": "FAILED"}, "FAILED"),
        ({"prepare": "FINISHED", "train": "KILLED"}, "KILLED"),
        ({}, "KILLED"),
    ],
)
def test_a_parents_status_follows_its_stages_latest(statuses, expected):
    assert runs.parent_status(statuses.values()) == expected
    tags = {f"{runs.STAGE_STATUS_TAG}{stage}": status for stage, status in statuses.items()}
    assert runs.stage_statuses({**tags, "git.commit": "abc"}) == statuses


class _Repository:
    """An artifact repository that keeps what it is given (or fails), standing in for a server's."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.uploaded = fail, []

    def log_artifact(self, local: str, artifact_path: str | None = None) -> None:
        if self.fail:
            raise OSError("connection reset by peer")
        self.uploaded.append((Path(local).name, Path(local).read_text(), artifact_path))


def _server_run(repository: _Repository) -> runs.StageRun:
    run = runs.StageRun(store=store.Store("http://127.0.0.1:1", "1", None), start=runs.Started("r", "", None))
    run._repository = repository
    return run


def test_uploads_to_a_server_go_in_the_background_from_a_snapshot_and_are_awaited(tmp_path):
    repository = _Repository()
    run = _server_run(repository)
    path = tmp_path / "metrics.json"
    path.write_text("as logged")
    run.log_artifact(path, "reports")
    path.unlink()  # the stage publishes its staged outputs meanwhile
    run.wait_for_uploads()
    assert repository.uploaded == [("metrics.json", "as logged", "reports")]


def test_a_failed_upload_fails_when_the_run_ends(tmp_path):
    run = _server_run(_Repository(fail=True))
    (tmp_path / "figure.png").write_text("png")
    run.log_artifact(tmp_path / "figure.png")
    with pytest.raises(OSError, match="connection reset"):
        run.wait_for_uploads()
