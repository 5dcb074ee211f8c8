"""Where the MLflow store is, how it is opened, and how a pipeline execution's stage runs are grouped.

The contracts (ARCHITECTURE.md, "Tracking"):
1. The store is `MLFLOW_TRACKING_URI` if set, else `sqlite:///<repo root>/mlflow.db`, the root taken from
   `DVC_ROOT` (the main repository even inside DVC's temporary experiment copies) or git. Relative sqlite
   or file URIs are made absolute against that root, so no run is ever written inside `.dvc/tmp`.
2. The store is opened, migrated and given its experiment under a file lock, so parallel workers never race
   in its creation.
3. Every stage run of one pipeline execution hangs under one parent run, keyed by the DVC experiment
   (`DVC_EXP_NAME` + `DVC_EXP_BASELINE_REV`) or, for plain `dvc repro`, by the `dvc` process that runs the
   stages (its pid and start time). `CHURN_PIPELINE_KEY` overrides both.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churn.errors import ChurnError
from churn.system import git

if TYPE_CHECKING:
    from mlflow import MlflowClient


log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
LOCK_FILE = ".mlflow.lock"
HTTP_TIMEOUT_S = "10"
HTTP_RETRIES = "2"


def repo_root() -> Path:
    """The main repository's root: DVC_ROOT (set by DVC, also in temp copies), else git, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    top = git("rev-parse", "--show-toplevel", check=False)
    return Path(top).resolve() if top else Path.cwd().resolve()


def absolute_uri(uri: str, root: Path) -> str:
    """Make a relative sqlite:/// or file: URI (or a bare path) absolute against the repository root."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        return uri if path.startswith("/") else f"sqlite:///{(root / path).resolve()}"
    if uri.startswith("file:"):
        path = uri.removeprefix("file:").removeprefix("//")
        return uri if path.startswith("/") else (root / path).resolve().as_uri()
    if "://" not in uri:  # a bare path, as MLflow allows
        return str((root / uri).resolve())
    return uri


def tracking_uri(root: Path | None = None, configured: str = "") -> str:
    """params `mlflow.tracking_uri` if set (it travels with a queued experiment, so no worker's environment
    can redirect it), else MLFLOW_TRACKING_URI, else the repository's own sqlite store."""
    root = root or repo_root()
    chosen = configured.strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return absolute_uri(chosen, root) if chosen else f"sqlite:///{root / STORE_FILE}"


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def redact(uri: str) -> str:
    """A URI safe to print: any password replaced by ***."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def preflight(uri: str) -> None:
    """Fail in seconds, with one line naming the URL, when a server store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError:
            return  # reachable; the API call that follows reports auth or other problems
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChurnError(
                f"cannot reach the MLflow tracking server at {redact(uri)} ({reason}); "
                "start it, or unset MLFLOW_TRACKING_URI to use the local store"
            ) from None
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        import sqlalchemy

        try:
            connect_args = {"connect_timeout": 5} if uri.startswith("postgresql") else {}
            engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - any driver error means the store is unusable
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ChurnError(f"cannot open the MLflow store {redact(uri)} ({first})") from None


def explain(exc: Exception, uri: str) -> ChurnError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "401" in text or "Unauthorized" in text or "403" in text:
        return ChurnError(
            f"the MLflow server at {redact(uri)} refused the credentials; "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    return ChurnError(f"MLflow store {redact(uri)}: {text}")


def store_lock(root: Path | None = None):
    """The file lock that serialises creating the store and changing the registry on this machine."""
    from filelock import FileLock

    return FileLock(str((root or repo_root()) / LOCK_FILE), timeout=600)


@dataclass
class Store:
    uri: str
    experiment_id: str
    client: MlflowClient


def connect(experiment: str, configured_uri: str = "") -> Store:
    """Open (creating once, under a lock) the store and the experiment; set MLflow's URI for this process."""
    import mlflow
    from mlflow import MlflowClient

    root = repo_root()
    uri = tracking_uri(root, configured_uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
    # Ending a run on a server prints its URL, which costs a `runs/get` per run ended; the log names the run.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    preflight(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with store_lock(root):
            client = MlflowClient(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                location = (root / ARTIFACT_DIR).as_uri() if is_local_store(uri) else None
                experiment_id = client.create_experiment(experiment, artifact_location=location)
                log.info("created MLflow experiment %r in %s", experiment, redact(uri))
            else:
                experiment_id = found.experiment_id
    except ChurnError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors all end here
        raise explain(exc, uri) from None
    return Store(uri=uri, experiment_id=experiment_id, client=client)
