"""The Optuna storage: its URL, opened with heartbeats, reached with one-line errors, locked while workers join."""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn.errors import ChurnError
from churn.system import first_line

STORE_FILE = "optuna.db"


def default_storage(root: Path | None = None) -> str:
    from churn.tracking.store import repo_root

    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def resolve_storage(url: str | None, root: Path | None = None) -> str:
    """The storage URL to use: the default sqlite file, or `url` with a relative sqlite path made absolute."""
    from churn.tracking.store import absolute_uri, repo_root

    if not url:
        return default_storage(root)
    return absolute_uri(url, root or repo_root())


@dataclass(frozen=True)
class Faults:
    """How workers notice each other's death: each running trial writes a heartbeat to the storage every
    `heartbeat_interval` s; a trial without one for `grace_period` s is failed by the next worker that looks, and
    queued again (at most `max_retry` times, so parameters that kill their worker do not kill them all)."""

    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 2


def error_line(exc: BaseException) -> str:
    """The first line of an error, without SQLAlchemy's `(driver.ErrorClass) ` prefix."""
    return re.sub(r"^\([\w.]+\)\s*", "", first_line(exc))


def is_grpc(url: str) -> bool:
    return url.startswith("grpc://")


def is_shared(url: str) -> bool:
    """Whether several processes may write the storage at once: a database server, or Optuna's gRPC proxy."""
    return url.startswith(("postgresql", "mysql")) or is_grpc(url)


def _connect_server(url: str):
    """(engine, connection) to a database server, or a one-line error within seconds when unreachable."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from churn.tracking.store import redact

    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        return engine, engine.connect()
    except Exception as exc:  # noqa: BLE001 - any driver or URL error means the storage is unusable
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({error_line(exc)})") from None


def check_storage(url: str) -> None:
    """Fail fast, before anything slow, when a storage server cannot be reached."""
    if url.startswith("postgresql"):
        engine, connection = _connect_server(url)
        connection.close()
        engine.dispose()


@contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialise joining a study (creating it, its MLflow parent run, the run's target) across workers: a
    PostgreSQL advisory lock, which holds across machines, or a file lock next to a sqlite file. Through the
    gRPC proxy there is none: the study and its parent must exist before workers join (see load_or_create_study)."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        from filelock import FileLock

        with FileLock(url.removeprefix("sqlite:///") + ".lock", timeout=600):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = zlib.crc32(b"churn.tools.tune") & 0x7FFFFFFF
    engine, connection = _connect_server(url)
    try:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        yield
    finally:
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            connection.close()
            engine.dispose()


def open_storage(url: str, faults: Faults | None = None, on_stale=None):
    """The Optuna storage at `url` (tables created on first use). With `faults`, running trials send heartbeats
    and `on_stale(study, trial)` is called for a trial whose worker stopped sending them. `grpc://host:port` is
    Optuna's gRPC proxy (GrpcStorageProxy), which in Optuna 5.0 carries no heartbeats."""
    import optuna

    from churn.tracking.store import redact

    if is_grpc(url):
        host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port))
            storage.get_all_studies()  # the first call: fails now, with one line, if the proxy is not there
        except ImportError:
            raise ChurnError(
                f"{url}: the gRPC storage proxy needs grpcio (`.venv/bin/uv pip install grpcio`)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any gRPC or URL error means the storage is unusable
            raise ChurnError(f"cannot reach the Optuna gRPC proxy {url} ({error_line(exc)})") from None
        return storage
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    heartbeats: dict[str, Any] = {}
    if faults is not None:
        heartbeats = {
            "heartbeat_interval": faults.heartbeat_interval,
            "grace_period": faults.grace_period,
            "heartbeat_stale_trial_callback": on_stale,
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeats)
    except Exception as exc:  # noqa: BLE001
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({error_line(exc)})") from None


def fail_stale(study) -> None:
    """Fail the study's trials whose workers stopped sending heartbeats (their callback queues them again)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
