"""The compose stack's MLflow tracking server as local processes, for a host without Docker, the tests and the
bench: `make server`, or `python -m churn.tools.server [--dir DIR] [--auth-cache-ttl SECONDS]`.

What docker-compose.yml's `mlflow-migrate` then `mlflow` services run: `mlflow db upgrade`, then `mlflow server`
with the compose file's command line and docker/mlflow/basic_auth.ini (its user database moved from the
container's volume to DIR, default `.mlflow-server/` in the repository). Settings come from the environment, as
the compose file's come from .env:

    MLFLOW_BACKEND_STORE_URI        required; PostgreSQL (postgresql+psycopg2://user:password@host:5432/db)
    MLFLOW_ARTIFACTS_DESTINATION    a directory (made absolute) or s3://bucket/; default DIR/artifacts
    MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY    required
    MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_WORKERS (unset: MLflow's default of 4, as in compose)

The database password never reaches a command line (where any local user can read it): it is taken out of the
URI and given to libpq as PGPASSWORD. The server replaces this process, so Ctrl-C or SIGTERM stops it and its
workers.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churn.errors import ChurnError
from churn.system import atomic_path
from churn.tracking.store import preflight, redact

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[3]  # src/churn/tools/server.py -> the repository
AUTH_INI = PROJECT / "docker" / "mlflow" / "basic_auth.ini"  # the file the image ships
STATE_DIR = PROJECT / ".mlflow-server"
MLFLOW = str(Path(sys.executable).parent / "mlflow")
# What the compose file's `mlflow` service takes from .env, required there too.
ADMIN_VARIABLES = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
# What docker/mlflow/Dockerfile sets with ENV, besides MLFLOW_AUTH_CONFIG_PATH: defaults a run may override.
IMAGE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# The compose file's URI names psycopg2, the driver the image and this venv install (SQLAlchemy maps a bare
# `postgresql://` to psycopg 3, which neither has).
URI_EXAMPLE = "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE"


@dataclass(frozen=True)
class Settings:
    backend_store_uri: str  # without its password
    db_token: str | None  # the URI's password, for libpq's PGPASSWORD
    artifacts_destination: str
    host: str
    port: int
    workers: int | None  # None: MLflow's default, as the compose file leaves it


def migrate_command(backend_store_uri: str) -> list[str]:
    """docker-compose.yml's `mlflow-migrate` service."""
    return [MLFLOW, "db", "upgrade", backend_store_uri]


def server_command(
    backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int | None = None
) -> list[str]:
    """docker-compose.yml's `mlflow` service, flag for flag; `--workers` only when asked."""
    command = [
        MLFLOW,
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(port),
    ]
    return [*command, "--workers", str(workers)] if workers is not None else command


def split_password(uri: str) -> tuple[str, str | None]:
    """A PostgreSQL URI without its password, and the password (None when it has none)."""
    from sqlalchemy.engine import URL, make_url

    url = make_url(uri)
    if url.password is None:
        return uri, None
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(), str(url.password)  # nothing left to hide


def backend_store(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """MLFLOW_BACKEND_STORE_URI, checked: a psycopg2 PostgreSQL URI, split from its password."""
    uri = environ.get("MLFLOW_BACKEND_STORE_URI", "").strip()
    if not uri:
        raise ChurnError(f"MLFLOW_BACKEND_STORE_URI is not set; expected a PostgreSQL URI, {URI_EXAMPLE}")
    if not uri.startswith("postgresql+psycopg2://"):
        raise ChurnError(f"MLFLOW_BACKEND_STORE_URI must be a PostgreSQL URI, {URI_EXAMPLE}; got {redact(uri)!r}")
    from sqlalchemy.exc import ArgumentError

    try:
        return split_password(uri)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ChurnError(f"MLFLOW_BACKEND_STORE_URI is not a valid URI ({exc}): {redact(uri)}") from None


def artifacts_destination(environ: Mapping[str, str], state_dir: Path) -> str:
    """MLFLOW_ARTIFACTS_DESTINATION: an s3:// bucket as given, or a directory made absolute."""
    value = environ.get("MLFLOW_ARTIFACTS_DESTINATION", "").strip()
    if not value:
        return str(state_dir.resolve() / "artifacts")
    if value.startswith("s3://"):
        return value
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise ChurnError(f"MLFLOW_ARTIFACTS_DESTINATION must be a directory or s3://BUCKET/, got {value!r}")
    return str(Path(value).expanduser().resolve())


def _positive(environ: Mapping[str, str], name: str, upper: int) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) <= upper:
        raise ChurnError(f"{name} must be a whole number from 1 to {upper}, got {value!r}")
    return int(value)


def read_settings(environ: Mapping[str, str], state_dir: Path) -> Settings:
    """The server's settings from the environment; a missing or wrong one is one line naming the variable."""
    uri, token = backend_store(environ)
    missing = [name for name in ADMIN_VARIABLES if not environ.get(name, "").strip()]
    if missing:
        raise ChurnError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; the server needs the admin "
            "account it creates on its first start (MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD) and "
            "the key that signs its forms (MLFLOW_FLASK_SERVER_SECRET_KEY), as .env gives them to docker compose"
        )
    return Settings(
        backend_store_uri=uri,
        db_token=token,
        artifacts_destination=artifacts_destination(environ, state_dir),
        host=environ.get("MLFLOW_HOST", "").strip() or "127.0.0.1",
        port=_positive(environ, "MLFLOW_PORT", 65535) or 5000,
        workers=_positive(environ, "MLFLOW_WORKERS", 64),
    )


def auth_database(state_dir: Path) -> Path:
    """The basic-auth user database: the compose file keeps it on the `mlflow-auth` volume."""
    return state_dir.resolve() / "basic_auth.db"


def write_auth_config(state_dir: Path, auth_cache_ttl: int | None = None) -> Path:
    """docker/mlflow/basic_auth.ini with its `database_uri` in `state_dir` (and, if given, another credential
    cache TTL), written to `state_dir`; its path, for MLFLOW_AUTH_CONFIG_PATH."""
    config = configparser.ConfigParser(interpolation=None)
    if not config.read(AUTH_INI):
        raise ChurnError(f"{AUTH_INI} not found; run the server from a checkout of the project")
    config["mlflow"]["database_uri"] = f"sqlite:///{auth_database(state_dir)}"
    if auth_cache_ttl is not None:
        config["mlflow"]["auth_cache_ttl_seconds"] = str(auth_cache_ttl)
    path = state_dir.resolve() / "basic_auth.ini"
    with atomic_path(path) as staged, staged.open("w") as handle:
        handle.write(f"# Written by churn.tools.server from {AUTH_INI.relative_to(PROJECT)}; edit that file.\n")
        config.write(handle)
    return path


def server_environment(environ: Mapping[str, str], auth_config: Path, db_token: str | None) -> dict[str, str]:
    """The environment of `mlflow db upgrade` and `mlflow server`: the image's ENV, the auth config, and the
    database password for libpq (the URI that held it is dropped: the command line names the store)."""
    env = {key: value for key, value in environ.items() if key != "MLFLOW_BACKEND_STORE_URI"}
    for key, value in IMAGE_ENV.items():
        env.setdefault(key, value)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    if db_token is not None:
        env["PGPASSWORD"] = db_token
    return env


def _reason(output: str, hidden: str | None) -> str:
    """The line of a failed command's output that says why: its last exception line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    reason = (errors or lines or ["no output"])[-1]
    if hidden:
        reason = reason.replace(hidden, "***")
    return redact(reason)[:400]


def migrate(settings: Settings, env: dict[str, str]) -> None:
    """Create or upgrade the tracking schema in one process, before any worker starts (as `mlflow-migrate`)."""
    log.info("migrating the tracking schema of %s", redact(settings.backend_store_uri))
    result = subprocess.run(migrate_command(settings.backend_store_uri), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        reason = _reason(result.stderr + result.stdout, settings.db_token)
        raise ChurnError(f"mlflow db upgrade {redact(settings.backend_store_uri)} failed: {reason}")


def check_database(uri: str) -> None:
    """Fail in seconds, naming the variable, when the database refuses the login or does not answer (MLflow's
    migration would retry for about 100 s first)."""
    try:
        preflight(uri)
    except ChurnError as exc:
        raise ChurnError(f"MLFLOW_BACKEND_STORE_URI: {exc}") from None


def serve(state_dir: Path, auth_cache_ttl: int | None = None) -> None:
    """Check the settings and the database, migrate, then become `mlflow server`."""
    settings = read_settings(os.environ, state_dir)
    check_database(os.environ["MLFLOW_BACKEND_STORE_URI"].strip())
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the user database holds password hashes
    if not settings.artifacts_destination.startswith("s3://"):
        Path(settings.artifacts_destination).mkdir(parents=True, exist_ok=True)
    env = server_environment(os.environ, write_auth_config(state_dir, auth_cache_ttl), settings.db_token)
    migrate(settings, env)
    command = server_command(
        settings.backend_store_uri, settings.artifacts_destination, settings.host, settings.port, settings.workers
    )
    log.info("users in %s; artifacts in %s", auth_database(state_dir), settings.artifacts_destination)
    log.info("serving on http://%s:%d: %s", settings.host, settings.port, redact(shlex.join(command)))
    try:
        os.execve(command[0], command, env)  # noqa: S606 - the server takes this process's place
    except OSError as exc:
        raise ChurnError(f"cannot start {command[0]}: {exc.strerror}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m churn.tools.server",
        description="docker-compose.yml's MLflow tracking server (basic auth, PostgreSQL) as local processes; "
        "settings from the environment (see the module's docstring or the README).",
    )
    top.add_argument(
        "--dir",
        type=Path,
        default=STATE_DIR,
        help=f"for the user database, the auth config and default artifacts (default {STATE_DIR})",
    )
    top.add_argument(
        "--auth-cache-ttl",
        type=int,
        metavar="SECONDS",
        help="seconds a verified credential stays cached (default: docker/mlflow/basic_auth.ini's; 0 turns it off)",
    )
    return top


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    args = parser().parse_args(argv)
    run_cli(lambda: serve(args.dir, args.auth_cache_ttl))


if __name__ == "__main__":
    main()
