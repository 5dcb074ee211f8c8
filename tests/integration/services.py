"""Real services for integration tests, on 127.0.0.1 and free ports, always stopped afterwards.

- `moto_s3`: an S3-compatible endpoint (moto's server), standing in for the compose stack's MinIO;
- `postgres_server`: the PostgreSQL server of the session: the one .ci/run starts (CHURN_TEST_POSTGRES_URI), or
  else a throwaway cluster from the installed binaries (initdb, pg_ctl), stopped and deleted afterwards;
- `postgres_database`: a fresh database on that server, dropped afterwards;
- `optuna_storage`: Optuna's storage on such a database for a test's own reads, its connections closed afterwards;
- `tracking_stack`: a database, an S3 bucket and `mlflow_server` on them, the compose stack in one block;
- `mlflow_server`: `mlflow server` as docker-compose.yml runs it (PostgreSQL backend store, artifacts in an S3
  bucket served through the server, basic auth with the project's docker/mlflow/basic_auth.ini), started by
  `make server`'s tool, churn.tools.server.

Each server runs in its own process group, so stopping it also stops its workers.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import project_env, require

if TYPE_CHECKING:
    from collections.abc import Iterator

    import optuna

BIN = Path(sys.executable).parent
REGION = "us-east-1"
# moto accepts any key pair; these exist only because S3 clients refuse to sign without one.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
PG_NO_BINARIES = "no PostgreSQL server binaries (initdb) found; install postgresql-15 to run these"
PG_SETTINGS = {  # a throwaway cluster: loopback only, fast to start, durability off
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Room for a session's peak: up to four tuning workers and an MLflow server, each with its own pool, the
    # tests' own connections, and databases whose connections close only when they are dropped. 16MB of
    # shared buffers is far above the 2 buffers a connection needs.
    "shared_buffers": "'16MB'",
    "max_connections": "200",
}


def postgres_bindir() -> Path | None:
    """The directory holding the newest installed `initdb` and `pg_ctl`, or None when there is none."""
    candidates: list[Path] = []
    with suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True)
        candidates.append(Path(out.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        digits = "".join(c if c.isdigit() else " " for c in path.parent.name)
        return tuple(int(n) for n in digits.split()) or (0,)

    # Debian/Ubuntu (/usr/lib/postgresql/15/bin), then the PGDG packages of RHEL-like systems; newest first.
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
        candidates += sorted(Path("/").glob(pattern.lstrip("/")), key=version, reverse=True)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server's tools as: None (this process's user) unless root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.fail("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


def _as_user(user: pwd.struct_passwd | None) -> list[str]:
    if user is None:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]


def _traversable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@contextmanager
def throwaway_postgres(bindir: Path) -> Iterator[str]:
    """A new PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port, for the block.

    Its superuser logs in over TCP with a password made now (the unix socket in the directory trusts the
    owner). Yields that role's `postgresql+psycopg2://` URI to the `postgres` database; the server is stopped
    and the directory deleted when the block ends, also on failure.
    """
    owner = _server_user()
    prefix = _as_user(owner)
    base = Path(tempfile.gettempdir())
    if owner and not _traversable_by_all(base):
        base = Path("/tmp")  # the server's user must reach its directory
    root = Path(tempfile.mkdtemp(prefix="churn-pg-", dir=base))  # short: unix socket paths are limited
    data, log = root / "data", root / "server.log"
    user, token = "churn_test", secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    started = False

    def tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [*prefix, str(bindir / args[0]), *args[1:]]
        return subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout)

    def stop_server() -> None:
        nonlocal started
        if not started:
            return
        with suppress(subprocess.SubprocessError):
            if tool("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30", timeout=60).returncode:
                tool("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30", timeout=60)
        pid_file = data / "postmaster.pid"
        if pid_file.exists():  # still up: kill the postmaster and, with it gone, its backends exit
            with suppress(ValueError, OSError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        started = False

    def cleanup() -> None:
        stop_server()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)  # should the session end without tearing its fixtures down
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(token + "\n")
        if owner:
            os.chown(root, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        init = tool(
            "initdb",
            "-D",
            str(data),
            "-U",
            user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        if init.returncode:
            pytest.fail(f"initdb exited {init.returncode}:\n{(init.stdout + init.stderr)[-3000:]}")
        settings = {**PG_SETTINGS, "unix_socket_directories": f"'{root}'"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        for _attempt in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            start = tool("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", f"-p {port}")
            started = start.returncode == 0 or (data / "postmaster.pid").exists()
            if start.returncode == 0:
                break
            stop_server()
            if "could not bind" not in _tail(log):
                break
        if not started:
            pytest.fail(f"pg_ctl start exited {start.returncode}:\n{start.stdout}{start.stderr}\n{_tail(log)}")
        yield f"postgresql+psycopg2://{user}:{token}@127.0.0.1:{port}/postgres"
    finally:
        cleanup()
        atexit.unregister(cleanup)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URI of a role that may create databases, for the test session.

    CHURN_TEST_POSTGRES_URI when set (.ci/run sets it, for the machine's own cluster); otherwise a throwaway
    cluster started from the installed server binaries. Skips, with one line, when there are none (fails in CI).
    """
    if base := os.environ.get(PG_ENV_URI, ""):
        yield base
        return
    bindir = postgres_bindir()
    require(bindir is not None, f"{PG_ENV_URI} is not set and {PG_NO_BINARIES}")
    with throwaway_postgres(bindir) as uri:
        yield uri


def libpq_dsn(uri: str) -> str:
    """A SQLAlchemy `postgresql+psycopg2://` URI as psycopg2 itself takes it."""
    return uri.replace("postgresql+psycopg2://", "postgresql://", 1)


def _admin(base: str, statement: str) -> None:
    import psycopg2

    connection = psycopg2.connect(libpq_dsn(base), connect_timeout=10)
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def postgres_database(base: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `base` (see `postgres_server`) for the block, as a
    `postgresql+psycopg2://` URI; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _admin(base, f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
