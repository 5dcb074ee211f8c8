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

import argparse
import logging
import os
import re
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError
from churn.timing import timed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlflow import MlflowClient

    from churn.params import MlflowParams

log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
LOCK_FILE = ".mlflow.lock"
PIPELINE_TAG = "churn.pipeline"
PARENT_TAG = "churn.role"
HTTP_TIMEOUT_S = "10"
HTTP_RETRIES = "2"


def repo_root() -> Path:
    """The main repository's root: DVC_ROOT (set by DVC, also in temp copies), else git, else the cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return Path(top).resolve()
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd().resolve()


def _absolute(uri: str, root: Path) -> str:
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
    return _absolute(chosen, root) if chosen else f"sqlite:///{root / STORE_FILE}"


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


def _explain(exc: Exception, uri: str) -> ChurnError:
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
        raise _explain(exc, uri) from None
    return Store(uri=uri, experiment_id=experiment_id, client=client)


# --- git and DVC context -------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_tags() -> dict[str, str]:
    """The commit the workspace is at, and whether tracked files differ from it (dvc.lock excepted,
    because DVC itself rewrites it between stages). One `git status` call gives both."""
    status = _git("status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return {}
    tags: dict[str, str] = {}
    changed = []
    for line in status.splitlines():
        if line.startswith("# branch.oid ") and line.split()[2] != "(initial)":
            tags["git.commit"] = line.split()[2]
        elif line[:2] in ("1 ", "2 ", "u "):  # ordinary, renamed (path<TAB>origin), unmerged entries
            fields = {"1": 8, "2": 9, "u": 10}[line[0]]
            changed.append(line.split(" ", fields)[fields].split("\t")[0])
    tags["git.dirty"] = str(any(path != "dvc.lock" for path in changed)).lower()
    return tags


def dvc_tags() -> dict[str, str]:
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def _dvc_ancestor() -> tuple[int, float] | None:
    """The (pid, start time) of the `dvc` process running this stage, if any."""
    import psutil

    from churn.warm import process_origin

    origin = process_origin()  # run by the warm runner: the ancestors are the client's
    try:
        for proc in psutil.Process(origin[0] if origin else None).parents():
            try:
                cmdline = proc.cmdline()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if any(Path(part).name in ("dvc", "dvc.exe") for part in cmdline[:2]) or cmdline[1:3] == ["-m", "dvc"]:
                return proc.pid, proc.create_time()
    except psutil.Error:
        return None
    return None


def pipeline_key(commit: str = "") -> tuple[str, str] | None:
    """(key, run name) identifying this pipeline execution, or None for a stage run by hand."""
    if os.environ.get("CHURN_PIPELINE_KEY"):
        key = os.environ["CHURN_PIPELINE_KEY"]
        return key, key
    name = os.environ.get("DVC_EXP_NAME")
    if name:
        # params.yaml's hash too: `dvc exp run -f -n NAME` may reuse a name with other params, and
        # MLflow refuses to change a logged param, so that execution needs a parent of its own.
        from churn.io import file_md5

        params_md5 = file_md5("params.yaml")[:12] if Path("params.yaml").exists() else ""
        return f"exp:{os.environ.get('DVC_EXP_BASELINE_REV', '')}:{name}:{params_md5}", name
    ancestor = _dvc_ancestor()
    if ancestor:
        pid, started = ancestor
        commit = commit[:7] or "nogit"
        return f"repro:{socket.gethostname()}:{pid}:{started:.3f}", f"repro@{commit}"
    return None


def find_or_create_parent(store: Store, tags: dict[str, str]) -> str | None:
    key = pipeline_key(tags.get("git.commit", ""))
    if key is None:
        return None
    key_value, run_name = key
    from mlflow.tracking.context import registry as context_registry

    found = store.client.search_runs(
        [store.experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key_value}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    all_tags = context_registry.resolve_tags({**tags, PIPELINE_TAG: key_value, PARENT_TAG: "pipeline"})
    run = store.client.create_run(store.experiment_id, run_name=run_name, tags=all_tags)
    log.info("MLflow parent run %s (%s)", run.info.run_id, run_name)
    return run.info.run_id


# --- a stage's run -------------------------------------------------------------------------------


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = ",".join(map(str, value))
    else:
        out[prefix] = str(value)


def flatten(mapping: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    _flatten("", mapping, out)
    return out


@dataclass
class StageRun:
    store: Store
    run_id: str
    parent_id: str | None
    data_md5: str = ""  # of the stage's inputs, as tagged (data.md5)
    output_md5: dict[str, str] = field(default_factory=dict)

    @timed("logging")
    def log_params(self, params: dict[str, Any], parent: bool = True) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for run_id in self._targets(parent):
            for start in range(0, len(items), 100):
                self.store.client.log_batch(run_id, params=items[start : start + 100])

    @timed("logging")
    def log_metrics(self, metrics: dict[str, float], prefix: str = "", parent: bool = True) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in metrics.items()]
        for run_id in self._targets(parent):
            self.store.client.log_batch(run_id, metrics=items)

    @timed("logging")
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.store.client.log_artifact(self.run_id, str(path), artifact_path)

    @timed("logging")
    def set_tags(self, tags: dict[str, str], parent: bool = False) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, value) for key, value in tags.items()]
        for run_id in self._targets(parent):
            self.store.client.log_batch(run_id, tags=items)  # one transaction, not one per tag

    @timed("logging")
    def record_outputs(self, staged: dict[str, Path]) -> None:
        """Tag the run with the md5 of each output (as dvc.lock will record it), so results restored
        from DVC's run-cache can be traced back to the run that computed them."""
        from churn.io import file_md5

        self.output_md5 = {final: file_md5(path) for final, path in staged.items()}
        self.set_tags({f"dvc.out.{final}": md5 for final, md5 in self.output_md5.items()})

    def _targets(self, parent: bool) -> list[str]:
        return [self.run_id, self.parent_id] if parent and self.parent_id else [self.run_id]


@contextmanager
def stage_run(stage: str, settings: MlflowParams, inputs: list[Path]) -> Iterator[StageRun]:
    """One MLflow run for one stage execution, under the pipeline's parent run.

    On success the run (and the parent, for now) ends FINISHED; on any error both end FAILED with the
    error as a tag, and the error propagates.
    """
    from churn.io import combined_md5
    from churn.timing import phase

    with phase("store"):  # importing MLflow is part of opening the store
        import mlflow

        store = connect(settings.experiment, settings.tracking_uri)
    with phase("logging"):
        context = {**git_tags(), **dvc_tags()}
    try:
        with phase("logging"):
            parent_id = find_or_create_parent(store, context)
        tags = {
            **context,
            "dvc.stage": os.environ.get("DVC_STAGE", stage),
            "data.md5": combined_md5(inputs) if inputs else "",
        }
        active = mlflow.start_run(experiment_id=store.experiment_id, run_name=stage, parent_run_id=parent_id, tags=tags)
    except ChurnError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, store.uri) from None
    run = StageRun(store=store, run_id=active.info.run_id, parent_id=parent_id, data_md5=tags["data.md5"])
    log.info("MLflow run %s (stage %s) in %s", run.run_id, stage, redact(store.uri))
    try:
        yield run
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            store.client.set_tag(run.run_id, "error", str(exc)[:4000] or type(exc).__name__)
            mlflow.end_run(status)
            if parent_id:
                store.client.set_terminated(parent_id, status)
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not mark MLflow run %s as %s", run.run_id, status)
        raise
    try:
        with phase("logging"):
            mlflow.end_run("FINISHED")
            if parent_id:
                store.client.set_terminated(parent_id, "FINISHED")
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, store.uri) from None


# --- command line: make run's setup and summary ------------------------------------------------


def _init(settings: MlflowParams) -> None:
    store = connect(settings.experiment, settings.tracking_uri)
    log.info(
        "MLflow store ready: %s (experiment %r, id %s)", redact(store.uri), settings.experiment, store.experiment_id
    )


def ui_command(uri: str) -> str:
    if is_local_store(uri):
        return f".venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"open {uri}"


def _summary(settings: MlflowParams) -> None:
    import json

    experiment = settings.experiment
    uri = tracking_uri(configured=settings.tracking_uri)
    metrics_path = Path("reports/metrics.json")
    lines = ["", "Pipeline finished."]
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        headline = ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss")
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in headline if k in metrics)
        lines.append(f"  test metrics: {shown}")
    lines.append(f"  MLflow runs:  {redact(uri)} (experiment {experiment!r})")
    lines.append(f"  MLflow UI:    {ui_command(uri)}")
    lines.append("  Compare:      .venv/bin/dvc metrics show   |   .venv/bin/dvc exp show")
    print("\n".join(lines))  # noqa: T201 - the summary the user reads at the end of `make run`


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.params import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tracking")
    parser.add_argument("command", choices=("init", "summary", "uri"))
    args = parser.parse_args(argv)

    def _main() -> None:
        settings = load_params().mlflow
        if args.command == "init":
            _init(settings)
        elif args.command == "summary":
            _summary(settings)
        else:
            print(tracking_uri(configured=settings.tracking_uri))  # noqa: T201 - machine-readable output

    run_cli(_main)


if __name__ == "__main__":
    main()
