"""Real services for integration tests, on 127.0.0.1 and free ports, always stopped afterwards.

- `moto_s3`: an S3-compatible endpoint (moto's server), standing in for the compose stack's MinIO;
- `postgres_server`: the PostgreSQL server of the session: the one .ci/run starts (CHURN_TEST_POSTGRES_URI), or
  else a throwaway cluster from the installed binaries (churn.tools.postgres), stopped and deleted afterwards;
- `postgres_database`: a fresh database on that server, dropped afterwards;
- `optuna_storage`: Optuna's storage on such a database for a test's own reads, its connections closed afterwards;
- `tracking_stack`: a database, an S3 bucket and `mlflow_server` on them, the compose stack in one block;
- `mlflow_server`: `mlflow server` as docker-compose.yml runs it (PostgreSQL backend store, artifacts in an S3
  bucket served through the server, basic auth with the project's docker/mlflow/basic_auth.ini), started by
  `make server`'s tool, churn.tools.server.

Each server runs in its own process group, so stopping it also stops its workers.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from churn.tools import postgres
from churn.tools.postgres import free_port, libpq_dsn  # noqa: F401 - libpq_dsn re-exported to the tests
from tests.conftest import project_env, require

if TYPE_CHECKING:
    from collections.abc import Iterator

    import optuna

BIN = Path(sys.executable).parent
REGION = "us-east-1"
# moto accepts any key pair; these exist only because S3 clients refuse to sign without one.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def stop(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True`, and everything it started."""
    with suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    # Whatever is left of the group: workers that outlived their parent, or a parent deaf to SIGTERM.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextmanager
def service(cmd: list[str], env: dict[str, str], log: Path, health: str, timeout: float) -> Iterator[None]:
    """Run `cmd` in a new process group until the block ends; wait (at most `timeout` s) for `health` to answer."""
    with log.open("wb") as handle:
        process = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{Path(cmd[0]).name} exited {process.returncode} while starting:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(health, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{Path(cmd[0]).name} did not answer {health} within {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield
    finally:
        stop(process)


# --- S3 -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, **S3_KEYS)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def moto_s3(workdir: Path) -> Iterator[S3]:
    """An S3 endpoint on a free loopback port (in memory: gone when the block ends)."""
    port = free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with service(cmd, project_env(), workdir / "moto.log", f"{url}/moto-api/", timeout=60):
        yield S3(url)


# --- PostgreSQL -----------------------------------------------------------------------------------------------------


PG_ENV_URI = "CHURN_TEST_POSTGRES_URI"


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URI of a role that may create databases, for the test session.

    CHURN_TEST_POSTGRES_URI when set (.ci/run sets it, for the machine's own cluster); otherwise a throwaway
    cluster started from the installed server binaries (churn.tools.postgres, which the benchmarks use too).
    Skips, with one line, when there are none (fails in CI).
    """
    if not os.environ.get(PG_ENV_URI):
        require(postgres.bindir() is not None, f"{PG_ENV_URI} is not set and {postgres.NO_BINARIES} to run these")
    with postgres.server(PG_ENV_URI) as uri:
        yield uri


postgres_database = postgres.database  # (base, prefix): a new database on that server for the block, dropped after


@contextmanager
def optuna_storage(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """Optuna's storage at `url` for a test's own reads, on one connection pool closed when the block ends.
    (`optuna.load_study(storage=url)` opens a pool per call, and it stays open until the garbage collector
    finds it: a test polling a study that way holds dozens of connections.)"""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


# --- MLflow tracking server -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowServer:
    url: str
    admin: tuple[str, str]  # user name and its secret, made up for this server
    log: Path

    def request(self, method: str, path: str, body: dict, auth: tuple[str, str] | None = None) -> dict:
        """Call the server's REST API (as the admin unless `auth` is given) and return the JSON answer."""
        user, token = auth or self.admin
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def create_user(self, user: str) -> tuple[str, str]:
        """A new (non-admin) user, as the compose stack's admin would create one for a team member."""
        token = secrets.token_hex(12)
        self.request("POST", "/api/2.0/mlflow/users/create", {"username": user, "password": token})
        return user, token


@contextmanager
def mlflow_server(
    workdir: Path,
    backend_store_uri: str,
    s3: S3,
    bucket: str,
    workers: int = 1,
    auth_cache_ttl: int | None = None,
) -> Iterator[MlflowServer]:
    """The compose stack's `mlflow-migrate` then `mlflow` services, as `make server` runs them
    (`python -m churn.tools.server`), on loopback: its user database and auth config in `workdir`.

    `workers`: 1 (the compose file's default is 4; one is plenty for most tests on a small machine).
    `auth_cache_ttl`: seconds a verified credential stays cached; None keeps docker/mlflow/basic_auth.ini's.
    """
    admin = ("admin", secrets.token_hex(16))
    port = free_port()
    env = project_env(**S3_ENV)
    env.update(
        {
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
            "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
            "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/",
            "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(port),
            "MLFLOW_WORKERS": str(workers),
        }
    )
    cmd = [sys.executable, "-m", "churn.tools.server", "--dir", str(workdir)]
    if auth_cache_ttl is not None:
        cmd += ["--auth-cache-ttl", str(auth_cache_ttl)]
    url = f"http://127.0.0.1:{port}"
    log = workdir / "mlflow-server.log"
    # The schema migration (minutes on a fresh database and a busy machine), then the workers' start.
    with service(cmd, env, log, f"{url}/health", timeout=600):
        yield MlflowServer(url=url, admin=admin, log=log)


@dataclass(frozen=True)
class Stack:
    database: str
    s3: S3
    server: MlflowServer
    workdir: Path


@contextmanager
def tracking_stack(
    workdir: Path, postgres: str, prefix: str, buckets: tuple[str, ...] = ("mlflow",)
) -> Iterator[Stack]:
    """The compose stack on loopback: a new database on `postgres`, an S3 endpoint with `buckets` (the first one
    the server's artifacts), and the tracking server on them (`mlflow_server`), all stopped afterwards."""
    with postgres_database(postgres, prefix) as database, moto_s3(workdir) as s3:
        for bucket in buckets:
            s3.create_bucket(bucket)
        with mlflow_server(workdir, database, s3, buckets[0]) as server:
            yield Stack(database, s3, server, workdir)
