"""The production topology, run for real: the pipeline against an MLflow tracking server with basic auth, its
runs in PostgreSQL and its artifacts in an S3 bucket (moto's server standing in for MinIO), all on loopback.

One variable switches a clone to the server: MLFLOW_TRACKING_URI (or params `mlflow.tracking_uri`), with the
user's credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. Wrong credentials and an
unreachable or silent server end a stage with one line and no outputs.
"""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import project_env
from tests.integration.helpers import DVC, PYTHON, make_repo, run
from tests.integration.services import libpq_dsn, tracking_stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUCKET = "mlflow"
EXPERIMENT = "churn"
STAGES = {"prepare", "featurize", "train", "evaluate", "register"}


def client_env(url: str, user: str, token: str) -> dict[str, str]:
    """What a team member exports to log to the server (docs/tracking.md, "The tracking server")."""
    return project_env(
        **{"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": token}
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server):
    """PostgreSQL database + S3 bucket + MLflow server with basic auth, and a user the admin created."""
    with tracking_stack(tmp_path_factory.mktemp("stack"), postgres_server, "mlflow", (BUCKET,)) as made:
        user = made.server.create_user("alice")
        yield {"database": made.database, "s3": made.s3, "server": made.server, "user": user}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, stack):
    """A clone that ran `make run`'s two steps (init, dvc repro) with MLFLOW_TRACKING_URI pointing at the server."""
    root = make_repo(tmp_path_factory.mktemp("server") / "repo", rows=400)
    env = client_env(stack["server"].url, *stack["user"])
    run([PYTHON, "-m", "churn.tools.store", "init"], root, env)
    run([*DVC, "repro"], root, env)
    return root


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    """A clone with data but no stage outputs yet, for the failure cases."""
    return make_repo(tmp_path_factory.mktemp("blank") / "repo", rows=300)


def query(database: str, sql: str, *args) -> list[tuple]:
    import psycopg2

    connection = psycopg2.connect(libpq_dsn(database), connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()
    finally:
        connection.close()


# --- the pipeline on the server -------------------------------------------------------------------------------------


def test_runs_are_in_postgresql_one_parent_five_stage_children(stack, repo):
    rows = query(
        stack["database"],
        """
        SELECT r.run_uuid, r.status, r.artifact_uri, parent.value, stage.value
        FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        LEFT JOIN tags parent ON parent.run_uuid = r.run_uuid AND parent.key = 'mlflow.parentRunId'
        LEFT JOIN tags stage ON stage.run_uuid = r.run_uuid AND stage.key = 'dvc.stage'
        WHERE e.name = %s
        """,
        EXPERIMENT,
    )
    parents = [row for row in rows if row[3] is None]
    children = [row for row in rows if row[3] is not None]
    assert len(parents) == 1 and len(children) == 5, rows
    assert {row[3] for row in children} == {parents[0][0]}
    assert {row[4] for row in children} == STAGES
    assert {row[1] for row in rows} == {"FINISHED"}
    # Artifacts go through the server (`--serve-artifacts`): the client never needs S3 credentials.
    assert all(row[2].startswith("mlflow-artifacts:/") for row in rows), [row[2] for row in rows]
    # Nothing went to the embedded store.
    assert not (repo / "mlflow.db").exists()
    assert not (repo / "mlartifacts").exists()


def test_the_runs_belong_to_the_user_who_logged_them(stack, repo):
    users = query(
        stack["database"],
        "SELECT DISTINCT r.user_id FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE e.name = %s",
        EXPERIMENT,
    )
    assert users == [(stack["user"][0],)]


def test_metrics_in_postgresql_match_dvc_metrics(stack, repo):
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    rows = query(
        stack["database"],
        "SELECT l.value FROM latest_metrics l JOIN runs r ON r.run_uuid = l.run_uuid "
        "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'dvc.stage' AND t.value = 'evaluate' "
        "WHERE l.key = %s",
        "test_roc_auc",
    )
    assert rows and rows[0][0] == pytest.approx(metrics["roc_auc"])


def test_model_artifacts_are_in_the_bucket(stack, repo):
    keys = stack["s3"].keys(BUCKET)
    mlmodels = [key for key in keys if key.endswith("/MLmodel")]
    assert mlmodels, keys
    model_dir = mlmodels[0].rsplit("/", 1)[0]
    assert any(key.startswith(model_dir) and key.endswith(".skops") for key in keys), keys
    assert any(key.endswith("confusion_matrix.png") for key in keys), "evaluate's figures are in the bucket too"


def test_registered_champion_loads_from_the_server(stack, repo):
    script = textwrap.dedent(
        """
        import json, sys
        import mlflow
        import pandas as pd
        import yaml

        data = yaml.safe_load(open("params.yaml"))["data"]
        rows = pd.read_csv(data["raw_path"]).head(5)
        frame = rows[data["numerical"]].astype(float).join(rows[data["categorical"]].astype(str))
        model = mlflow.pyfunc.load_model("models:/churn_model@champion")
        print(json.dumps(model.predict(frame).tolist()))
        """
    )
    result = run([PYTHON, "-c", script], repo, client_env(stack["server"].url, *stack["user"]))
    probabilities = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(probabilities) == 5
    assert all(len(row) == 2 and 0 <= row[1] <= 1 and row[0] + row[1] == pytest.approx(1) for row in probabilities)


def test_params_key_switches_a_clone_to_the_server_without_the_variable(stack, repo):
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    settings = yaml.safe_load(original)
    settings["mlflow"]["tracking_uri"] = stack["server"].url
    env = client_env(stack["server"].url, *stack["user"])
    del env["MLFLOW_TRACKING_URI"]
    try:
        params_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        assert run([PYTHON, "-m", "churn.tools.store", "uri"], repo, env).stdout.strip() == stack["server"].url
        result = run([PYTHON, "-m", "churn.tools.store", "init"], repo, env)
    finally:
        params_path.write_text(original)
    assert f"MLflow store ready: {stack['server'].url}" in result.stderr
    assert not (repo / "mlflow.db").exists()


# --- failures: one line, no outputs ---------------------------------------------------------------------------------


def assert_nothing_written(root: Path) -> None:
    assert not list((root / "data").glob("prepared/*")), "a failed stage left outputs"
    assert not list(root.glob(".staging-*")), "a failed stage left its staging folder"
    assert not (root / "mlflow.db").exists()


def fail_stage(root: Path, env: dict[str, str]):
    result = run([PYTHON, "-m", "churn.pipeline.prepare"], root, env, check=False, timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_wrong_password_is_one_line_naming_the_variables(stack, blank):
    user, _ = stack["user"]
    line = fail_stage(blank, client_env(stack["server"].url, user, "not-the-password"))
    assert line == (
        f"error: the MLflow server at {stack['server'].url} refused the credentials; "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    assert_nothing_written(blank)


def test_missing_credentials_are_refused_the_same_way(stack, blank):
    env = project_env(MLFLOW_TRACKING_URI=stack["server"].url)
    result = run([PYTHON, "-m", "churn.tools.store", "init"], blank, env, check=False, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the MLflow server at {stack['server'].url} refused the credentials; "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    ]


def test_unreachable_server_fails_the_stage_with_one_line_naming_the_url(blank):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    line = fail_stage(blank, client_env(url, "alice", "unused"))
    assert line.startswith(f"error: cannot reach the MLflow tracking server at {url} ")
    assert_nothing_written(blank)


def test_server_that_accepts_but_never_answers_fails_the_stage_too(blank):
    with socket.socket() as sock:  # the kernel completes the handshake; nobody ever reads or answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        line = fail_stage(blank, client_env(url, "alice", "unused"))
    assert line.startswith(f"error: cannot reach the MLflow tracking server at {url} ")
    assert_nothing_written(blank)


def test_dvc_repro_stops_at_the_first_stage_when_the_server_is_down(blank):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = run([*DVC, "repro"], blank, client_env(url, "alice", "unused"), check=False, timeout=120)
    assert result.returncode != 0
    assert f"error: cannot reach the MLflow tracking server at {url} " in result.stderr
    assert_nothing_written(blank)
    assert not (blank / "dvc.lock").exists()
