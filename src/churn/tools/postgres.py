"""A throwaway PostgreSQL server for tests and benchmarks: a server named by an environment variable, or else a
new cluster from the installed binaries (initdb, pg_ctl) on loopback, stopped and deleted afterwards; and
throwaway databases on it.

    with server("CHURN_TEST_POSTGRES_URI") as base, database(base, "study") as uri:
        ...  # uri: postgresql+psycopg2://... of an empty database, dropped when the block ends
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from churn.errors import ChurnError

if TYPE_CHECKING:
    from collections.abc import Iterator

NO_BINARIES = "no PostgreSQL server binaries (initdb) found; install postgresql-15"
SETTINGS = {  # a throwaway cluster: loopback only, fast to start, durability off
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Room for a test session's peak: up to four tuning workers and an MLflow server, each with its own pool,
    # the tests' own connections, and databases whose connections close only when they are dropped. 16MB of
    # shared buffers is far above the 2 buffers a connection needs.
    "shared_buffers": "'16MB'",
    "max_connections": "200",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def bindir() -> Path | None:
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
    raise ChurnError("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


def _as_user(user: pwd.struct_passwd | None) -> list[str]:
    if user is None:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]


def _traversable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@contextmanager
def throwaway(binaries: Path) -> Iterator[str]:
    """A new PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port, for the block.

    Its superuser logs in over TCP with a password made now (the unix socket in the directory trusts the
    owner). Yields that role's `postgresql+psycopg2://` URI to the `postgres` database; the server is stopped
    and the directory deleted when the block ends, also on failure.
    """
    owner = _server_user()
    prefix = _as_user(owner)
    base = Path(tempfile.gettempdir())
    if owner and not _traversable_by_all(base):
        base = Path("/tmp")  # noqa: S108 - mkdtemp below: private. The server's user must reach its directory
    root = Path(tempfile.mkdtemp(prefix="churn-pg-", dir=base))  # short: unix socket paths are limited
    data, log = root / "data", root / "server.log"
    user, token = "churn_test", secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    started = False

    def tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [*prefix, str(binaries / args[0]), *args[1:]]
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

    atexit.register(cleanup)  # should the process end without leaving the block
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
            raise ChurnError(f"initdb exited {init.returncode}:\n{(init.stdout + init.stderr)[-3000:]}")
        settings = {**SETTINGS, "unix_socket_directories": f"'{root}'"}
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
            raise ChurnError(f"pg_ctl start exited {start.returncode}:\n{start.stdout}{start.stderr}\n{_tail(log)}")
        yield f"postgresql+psycopg2://{user}:{token}@127.0.0.1:{port}/postgres"
    finally:
        cleanup()
        atexit.unregister(cleanup)


@contextmanager
def server(*variables: str) -> Iterator[str]:
    """The URI of a role that may create databases, for the block: the first of the environment `variables` that
    is set, else a throwaway cluster (`throwaway`). ChurnError when neither is there."""
    for name in variables:
        if uri := os.environ.get(name, ""):
            yield uri
            return
    binaries = bindir()
    if binaries is None:
        raise ChurnError(f"{' and '.join(variables) or 'no server URI'} not set, and {NO_BINARIES}")
    with throwaway(binaries) as uri:
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
def database(base: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `base` (see `server`) for the block, named `prefix` and a random
    suffix, as a `postgresql+psycopg2://` URI; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _admin(base, f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
