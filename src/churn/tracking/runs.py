"""A pipeline execution's stage runs: git and DVC context tags, one parent run per execution, and the
stage run context manager (FINISHED, FAILED or KILLED, never left RUNNING by an exception).

Nothing is left RUNNING for ever: every run records the host and process that logs it (`churn.host`,
`churn.pid`, `churn.pid_start`, `churn.boot_id`), so a later run on that host can tell that the process is
gone (SIGKILL, a crash, a reboot) and end the run KILLED (`end_dead_runs`). A parent's status follows its
children: RUNNING while a stage runs, FAILED or KILLED if a stage's latest run is, FINISHED only when all are.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError
from churn.system import boot_id, caller_process, git, process_alive, process_started
from churn.timing import timed
from churn.tracking.store import Store, connect, explain, redact

if TYPE_CHECKING:
    from collections.abc import Iterator

    from churn.config import MlflowParams

log = logging.getLogger(__name__)

PIPELINE_TAG = "churn.pipeline"
PARENT_TAG = "churn.role"
HOST_TAG = "churn.host"
PID_TAG = "churn.pid"
PID_START_TAG = "churn.pid_start"
BOOT_TAG = "churn.boot_id"
STAGE_TAG = "dvc.stage"
PARENT_ID_TAG = "mlflow.parentRunId"

# --- git and DVC context -------------------------------------------------------------------------


def git_tags() -> dict[str, str]:
    """The commit the workspace is at, and whether tracked files differ from it (dvc.lock excepted,
    because DVC itself rewrites it between stages). One `git status` call gives both."""
    status = git("status", "--porcelain=v2", "--branch", "--untracked-files=no", check=False)
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

    origin = caller_process()  # run by a fork server: the ancestors are its client's
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
        from churn.system import file_md5

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
    end_dead_runs(store)  # once per pipeline execution: what an earlier, killed one left RUNNING
    parent_tags = {**tags, **process_tags(), PIPELINE_TAG: key_value, PARENT_TAG: "pipeline"}
    run = store.client.create_run(
        store.experiment_id, run_name=run_name, tags=context_registry.resolve_tags(parent_tags)
    )
    log.info("MLflow parent run %s (%s)", run.info.run_id, run_name)
    return run.info.run_id


# --- runs whose process is gone, and parents that follow their children ---------------------------


def process_tags() -> dict[str, str]:
    """The host and process that log this run: the process its caller started (under a fork server, the
    client, whose death ends the forked stage too), with its start time so that a reused pid is not taken
    for it, and this boot's id."""
    origin = caller_process()
    pid, started = origin if origin else (os.getpid(), None)
    started = started if started and started > 0 else process_started(pid)
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_START_TAG: f"{started:.2f}" if started is not None else "",
        BOOT_TAG: boot_id(),
    }


def run_process_gone(tags: dict[str, str]) -> bool:
    """Whether the process that logs a run (its process tags) is known to be gone: it ran on this host and
    its pid is not running, or runs a later process, or this host rebooted since. False when it cannot be told
    (another host, no process tags: runs of other tools or older code)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    if tags.get(BOOT_TAG) and boot_id() and tags[BOOT_TAG] != boot_id():
        return True
    try:
        started = float(tags[PID_START_TAG]) if tags.get(PID_START_TAG) else None
    except ValueError:
        started = None
    return process_alive(int(tags[PID_TAG]), started) is False


def settle_parent(store: Store, parent_id: str) -> str:
    """End a parent run with its children's status (each stage's latest run): FAILED if one failed, else
    KILLED if one was killed, else FINISHED; left as it is while one runs (RUNNING is returned). A parent
    without children was left by a process killed before its first stage run began: KILLED."""
    children = store.client.search_runs(
        [store.experiment_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent_id}'", max_results=1000
    )
    latest: dict[str, Any] = {}
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        latest[child.data.tags.get(STAGE_TAG) or child.info.run_name or child.info.run_id] = child
    statuses = {child.info.status for child in latest.values()}
    status = next((s for s in ("RUNNING", "FAILED", "KILLED") if s in statuses), "FINISHED" if latest else "KILLED")
    if status != "RUNNING":  # a stage that starts sets RUNNING itself (here it could undo a later stage's end)
        store.client.set_terminated(parent_id, status)
    return status


def end_dead_runs(store: Store) -> list[str]:
    """End KILLED every RUNNING run of this host whose process is gone (a SIGKILL, a crash, a reboot), and
    settle the parents involved, including a parent left RUNNING by a process killed before its first stage
    run began. Returns the run ids it ended; one log line when there are any."""
    host = socket.gethostname().replace("'", "")
    running = store.client.search_runs(
        [store.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    ended, parents, names = [], set(), []
    for run in running:
        tags = run.data.tags
        if tags.get(PARENT_TAG) == "pipeline" or not run_process_gone(tags):
            continue
        note = f"process {tags[PID_TAG]} on {tags[HOST_TAG]} ended without ending this run (killed?)"
        store.client.set_tag(run.info.run_id, "error", note)
        store.client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
        names.append(tags.get(STAGE_TAG) or run.info.run_name or run.info.run_id)
        if tags.get(PARENT_ID_TAG):
            parents.add(tags[PARENT_ID_TAG])
    for run in running:  # parents: those of the runs just ended, and any whose creator died before a child began
        tags = run.data.tags
        if tags.get(PARENT_TAG) == "pipeline" and (run.info.run_id in parents or run_process_gone(tags)):
            parents.add(run.info.run_id)
    for parent_id in parents:
        settle_parent(store, parent_id)
    if ended:
        log.warning(
            "marked %d MLflow run(s) KILLED whose process is gone (%s): killed before they could end",
            len(ended),
            ", ".join(names),
        )
    return ended


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
    def log_steps(self, steps: list[dict[str, float]], prefix: str = "") -> None:
        """One metric series per key, step = position in `steps` (e.g. cross-validation folds); this run only."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(f"{prefix}{k}", v, now, step) for step, row in enumerate(steps) for k, v in row.items()]
        for start in range(0, len(items), 1000):
            self.store.client.log_batch(self.run_id, metrics=items[start : start + 1000])

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
        from churn.system import file_md5

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
    from churn.system import combined_md5
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
            **process_tags(),
            STAGE_TAG: os.environ.get("DVC_STAGE", stage),
            "data.md5": combined_md5(inputs) if inputs else "",
        }
        active = mlflow.start_run(experiment_id=store.experiment_id, run_name=stage, parent_run_id=parent_id, tags=tags)
        if parent_id:
            store.client.update_run(parent_id, "RUNNING")  # a stage runs; an earlier one may have ended it
    except ChurnError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, store.uri) from None
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
                settle_parent(store, parent_id)
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not mark MLflow run %s as %s", run.run_id, status)
        raise
    try:
        with phase("logging"):
            mlflow.end_run("FINISHED")
            if parent_id:
                settle_parent(store, parent_id)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, store.uri) from None


SCHEMA_ROWS = 1000


@timed("logging")
def log_datasets(datasets: list[tuple]) -> None:
    """Log tables as MLflow dataset inputs: (frame, name, context, source, digest, target column or None).

    The digest is the file's md5 as dvc.lock records it (`<path>@md5:<md5>` is the source), and column types
    are inferred from the first rows: MLflow's own digest and schema inference look at every value of every
    text column in Python (0.5 s at 20k rows, growing with the data). Whether a column may be missing is
    still decided on all rows."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the integer-schema hint: the target is 0/1 by design
        for frame, name, context, source, digest, targets in datasets:
            _log_dataset(frame, name, context, f"{source}@md5:{digest}", digest, targets)


def _log_dataset(frame, name: str, context: str, source: str, digest: str, targets: str | None) -> None:
    from functools import cached_property

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    class SampledSchemaDataset(PandasDataset):
        @cached_property
        def schema(self) -> Schema:
            inferred = infer_signature(self.df.head(SCHEMA_ROWS)).inputs
            missing = self.df.isna().any()
            return Schema([ColSpec(col.type, col.name, required=not missing[col.name]) for col in inferred.inputs])

    dataset = SampledSchemaDataset(
        frame, source=resolve_dataset_source(source), targets=targets, name=name, digest=digest
    )
    mlflow.log_input(dataset, context=context)
