"""`make server` for real: the compose stack's MLflow server started by churn.tools.server on a real PostgreSQL,
with the credential cache docker/mlflow/basic_auth.ini turns on (docs/team-server.md), and what it refuses.

Every request here opens a new connection (urllib sends `Connection: close`), so with several workers the
kernel may hand each to any of them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from churn.tools.server import ADMIN_VARIABLES, auth_database
from tests.conftest import REPO, project_env
from tests.integration.services import free_port, mlflow_server, tracking_stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUCKET = "mlflow"
USERS = "/api/2.0/mlflow/users"
CURRENT_USER = f"{USERS}/current"  # any signed-in user may call it: a probe of the credential alone


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server):
    """A database, a bucket, and the server as `make server` starts it: one worker, the shipped 60 s cache."""
    with tracking_stack(tmp_path_factory.mktemp("team-server"), postgres_server, "team", (BUCKET,)) as made:
        yield {"database": made.database, "s3": made.s3, "server": made.server, "workdir": made.workdir}


def call(url: str, method: str, path: str, auth: tuple[str, str], body: dict | None = None) -> tuple[int, dict]:
    """One request on a new connection: its HTTP status and JSON body (empty when there is none)."""
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def statuses(url: str, auth: tuple[str, str], times: int) -> list[int]:
    return [call(url, "GET", CURRENT_USER, auth)[0] for _ in range(times)]


def new_user(server, name: str) -> tuple[str, str]:
    return server.create_user(f"{name}_{secrets.token_hex(3)}")


# --- what the tool refuses, before starting anything --------------------------------------------------------------


def admin_env(**extra: str) -> dict[str, str]:
    """The admin's variables as .env gives them to docker compose, made up for the test."""
    return project_env(**dict.fromkeys(ADMIN_VARIABLES, secrets.token_hex(16)), **extra)


def subprocess_run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", ""])
def test_the_tool_refuses_a_store_that_is_not_postgresql_in_one_line(tmp_path, uri):
    port = free_port()
    state = tmp_path / "state"
    env = admin_env(MLFLOW_BACKEND_STORE_URI=uri, MLFLOW_PORT=str(port))
    result = subprocess_run([sys.executable, "-m", "churn.tools.server", "--dir", str(state)], env, tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = "is not set; expected" if not uri else "must be a PostgreSQL URI, postgresql+psycopg2://"
    assert lines[0].startswith(f"error: MLFLOW_BACKEND_STORE_URI {expected}"), lines[0]
    assert not state.exists(), "the refused server wrote its directory"
    assert nothing_listens(port)


def test_make_server_refuses_sqlite_and_names_the_variable(tmp_path):
    port = free_port()
    state = REPO / ".mlflow-server"
    existed = state.exists()
    env = admin_env(MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", MLFLOW_PORT=str(port))
    # `-o .venv/.installed`: in a git worktree sharing another checkout's .venv, `make setup` would re-point the
    # venv's editable install of the package at this checkout.
    result = subprocess_run(["make", "-o", ".venv/.installed", "--no-print-directory", "server"], env, REPO)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: MLFLOW_BACKEND_STORE_URI must be a PostgreSQL URI, "
        f"postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE; got 'sqlite:///{tmp_path / 'mlflow.db'}'"
    ], result.stderr
    assert state.exists() == existed
    assert not (tmp_path / "mlflow.db").exists()
    assert nothing_listens(port)


def test_a_missing_admin_variable_is_refused_in_one_line(tmp_path):
    env = admin_env(MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://u:p@127.0.0.1:1/d")  # checked before the database
    del env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    result = subprocess_run([sys.executable, "-m", "churn.tools.server", "--dir", str(tmp_path / "s")], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: MLFLOW_AUTH_ADMIN_PASSWORD is not set; the server needs the admin account it creates on its first "
        "start (MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD) and the key that signs its forms "
        "(MLFLOW_FLASK_SERVER_SECRET_KEY), as .env gives them to docker compose"
    ]


def test_a_database_that_refuses_the_login_is_one_line_without_the_password(tmp_path, postgres_server):
    wrong = secrets.token_hex(8)
    uri = re.sub(r"(://[^:]+):[^@]+@", rf"\1:{wrong}@", postgres_server)
    port = free_port()
    env = admin_env(MLFLOW_BACKEND_STORE_URI=uri, MLFLOW_PORT=str(port))
    result = subprocess_run([sys.executable, "-m", "churn.tools.server", "--dir", str(tmp_path / "s")], env, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: MLFLOW_BACKEND_STORE_URI: cannot open the MLflow store postgresql+psycopg2://")
    assert "password authentication failed" in lines[0], lines[0]
    assert wrong not in result.stderr
    assert not (tmp_path / "s").exists()
    assert nothing_listens(port)


# --- the server it starts -----------------------------------------------------------------------------------------


def test_the_server_runs_the_compose_command_without_the_database_password(stack):
    import psutil

    server = stack["server"]
    token = re.match(r"postgresql\+psycopg2://[^:]+:([^@]+)@", stack["database"])[1]
    database = stack["database"].rsplit("/", 1)[1]
    log = server.log.read_text()
    served = re.search(r"serving on (\S+): (.*)", log)
    assert served, log[-3000:]
    assert served[1] == server.url
    assert re.search(rf" server --backend-store-uri postgresql\+psycopg2://\w+@[\d.:]+/{database} ", served[2])
    assert token not in log
    # Every process of the server (mlflow server, uvicorn and its workers, MLflow's job runners).
    port = server.url.rsplit(":", 1)[1]
    processes = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if port in " ".join(p.info["cmdline"] or []) or database in " ".join(p.info["cmdline"] or [])
    ]
    assert any(" server --backend-store-uri " in line for line in processes), processes
    assert [line for line in processes if token in line] == []
    assert "--workers 1" in served[2]


def test_a_wrong_password_gets_401_every_time_also_right_after_the_right_one(stack):
    server = stack["server"]
    user, token = new_user(server, "wrong")
    wrong = [token + "x", token[:-1], token.upper(), "", server.admin[1]]
    for _ in range(2):
        assert statuses(server.url, (user, token), 2) == [200, 200]  # accepted, then from the cache
        for guess in wrong:
            assert statuses(server.url, (user, guess), 2) == [401, 401], guess
    assert statuses(server.url, (server.admin[0], token), 2) == [401, 401]  # another user's name, same password
    assert statuses(server.url, ("nobody", token), 2) == [401, 401]


def test_the_shipped_config_caches_a_verified_credential(stack):
    """A hash changed behind MLflow's back (SQL on the user database, not the API) does not reach a worker that
    cached the credential until the entry expires: proof that the cache is on, and why the API is the way."""
    from werkzeug.security import generate_password_hash

    server = stack["server"]
    user, token = new_user(server, "cached")
    assert statuses(server.url, (user, token), 1) == [200]
    other = secrets.token_hex(12)
    with sqlite3.connect(auth_database(stack["workdir"])) as db:
        changed = db.execute(
            "UPDATE users SET password_hash = ? WHERE username = ?", (generate_password_hash(other), user)
        ).rowcount
    assert changed == 1
    assert statuses(server.url, (user, token), 3) == [200, 200, 200]  # the cached entry (60 s)
    assert statuses(server.url, (user, other), 1) == [200]  # the database's hash: the change is there


def test_a_user_deleted_through_the_api_is_refused_at_once(stack):
    server = stack["server"]
    user, token = new_user(server, "deleted")
    assert statuses(server.url, (user, token), 2) == [200, 200]
    assert call(server.url, "DELETE", f"{USERS}/delete", server.admin, {"username": user})[0] == 200
    assert statuses(server.url, (user, token), 5) == [401] * 5


def test_a_password_changed_through_the_api_is_refused_at_once(stack):
    server = stack["server"]
    user, token = new_user(server, "changed")
    assert statuses(server.url, (user, token), 2) == [200, 200]
    new = secrets.token_hex(12)
    body = {"username": user, "password": new}
    assert call(server.url, "PATCH", f"{USERS}/update-password", server.admin, body)[0] == 200
    assert statuses(server.url, (user, token), 5) == [401] * 5
    assert statuses(server.url, (user, new), 2) == [200, 200]


def test_a_read_user_cannot_write_to_another_users_run_but_can_read_it(stack):
    server = stack["server"]
    owner, reader = new_user(server, "owner"), new_user(server, "reader")
    status, body = call(server.url, "POST", "/api/2.0/mlflow/experiments/create", owner, {"name": f"x-{owner[0]}"})
    assert status == 200, body
    experiment = body["experiment_id"]
    status, body = call(server.url, "POST", "/api/2.0/mlflow/runs/create", owner, {"experiment_id": experiment})
    assert status == 200, body
    run_id = body["run"]["info"]["run_id"]

    status, body = call(server.url, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", reader)
    assert status == 200 and body["run"]["info"]["run_id"] == run_id
    tag = {"run_id": run_id, "key": "k", "value": "v"}
    metric = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0}
    assert call(server.url, "POST", "/api/2.0/mlflow/runs/set-tag", reader, tag)[0] == 403
    assert call(server.url, "POST", "/api/2.0/mlflow/runs/log-metric", reader, metric)[0] == 403
    assert call(server.url, "POST", "/api/2.0/mlflow/runs/set-tag", server.admin, tag)[0] == 200
    assert call(server.url, "POST", "/api/2.0/mlflow/runs/set-tag", owner, {**tag, "key": "k2"})[0] == 200


def started_workers(log: Path, expected: int, timeout: float = 120) -> set[str]:
    """The pids of the uvicorn workers the server's log reports started (waits for `expected` of them)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(1)


def test_with_two_workers_the_old_credential_is_refused_everywhere_once_the_ttl_has_passed(stack, tmp_path):
    ttl = 3
    workdir = tmp_path / "two-workers"
    workdir.mkdir()
    # The same tracking database (migrated already), a user database of its own.
    with mlflow_server(workdir, stack["database"], stack["s3"], BUCKET, workers=2, auth_cache_ttl=ttl) as server:
        assert len(started_workers(server.log, 2)) == 2, server.log.read_text()[-3000:]
        config = (workdir / "basic_auth.ini").read_text()
        assert re.search(rf"^auth_cache_ttl_seconds = {ttl}$", config, flags=re.MULTILINE), config
        deleted, changed = new_user(server, "gone"), new_user(server, "moved")
        for credential in (deleted, changed):  # cached on whichever workers these connections reach
            assert statuses(server.url, credential, 20) == [200] * 20
        new = secrets.token_hex(12)
        assert call(server.url, "DELETE", f"{USERS}/delete", server.admin, {"username": deleted[0]})[0] == 200
        body = {"username": changed[0], "password": new}
        assert call(server.url, "PATCH", f"{USERS}/update-password", server.admin, body)[0] == 200
        time.sleep(ttl + 1.5)
        assert statuses(server.url, deleted, 30) == [401] * 30
        assert statuses(server.url, changed, 30) == [401] * 30
        assert statuses(server.url, (changed[0], new), 10) == [200] * 10
