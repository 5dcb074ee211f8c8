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
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError
from churn.system import boot_id, caller_process, git, process_alive, process_started
from churn.timing import phase, timed
from churn.tracking.store import Store, connect, explain, is_local_store, redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

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
STAGE_STATUS_TAG = "churn.stage_status."  # on a parent: each stage's latest status
EXECUTION_TAG = "churn.execution"  # on a parent: the process (host:pid:start) of the execution that used it last

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


@dataclass(frozen=True)
class Parent:
    """A pipeline execution's parent run as this stage found or made it: its id, status and tags."""

    run_id: str
    status: str
    tags: dict[str, str]


def execution_tag() -> str:
    """Which process runs this pipeline execution: the `dvc` process running the stages (else this one), as
    host:pid:start. A parent reused by a later execution (`dvc exp run -f` with the same name and params)
    carries another value, so the first stage of that execution knows it is first."""
    ancestor = _dvc_ancestor()
    pid, started = ancestor if ancestor else (os.getpid(), process_started(os.getpid()) or 0.0)
    return f"{socket.gethostname()}:{pid}:{started:.2f}"


def find_or_create_parent(store: Store, tags: dict[str, str], key: tuple[str, str] | None = None) -> Parent | None:
    """This execution's parent run (one search), created when there is none. The first stage of an execution
    (a new parent, or a reused one that an earlier execution made) first ends this host's dead runs. `key`:
    the pipeline key if already known (else `pipeline_key`)."""
    key = key or pipeline_key(tags.get("git.commit", ""))
    if key is None:
        return None
    key_value, run_name = key
    from mlflow.tracking.context import registry as context_registry

    found = store.client.search_runs(
        [store.experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key_value}'", max_results=1
    )
    execution = execution_tag()
    if found:
        run = found[0]
        # An earlier execution's parent, reused: first end what that one left running (read the parent again
        # only if that changed anything; it may have settled it).
        if run.data.tags.get(EXECUTION_TAG) != execution and end_dead_runs(store):
            run = store.client.get_run(run.info.run_id)
        return Parent(run.info.run_id, run.info.status, dict(run.data.tags))
    end_dead_runs(store)  # once per pipeline execution: what an earlier, killed one left RUNNING
    parent_tags = {**tags, **process_tags(), PIPELINE_TAG: key_value, PARENT_TAG: "pipeline", EXECUTION_TAG: execution}
    run = store.client.create_run(
        store.experiment_id, run_name=run_name, tags=context_registry.resolve_tags(parent_tags)
    )
    log.info("MLflow parent run %s (%s)", run.info.run_id, run_name)
    return Parent(run.info.run_id, run.info.status, dict(parent_tags))


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


def parent_status(stage_statuses: Iterable[str]) -> str:
    """A parent's status from its stages' latest statuses: RUNNING while one runs, else FAILED if one failed,
    else KILLED if one was killed, else FINISHED; KILLED when it has none (its creator died before a stage
    began)."""
    statuses = set(stage_statuses)
    return next((s for s in ("RUNNING", "FAILED", "KILLED") if s in statuses), "FINISHED" if statuses else "KILLED")


def stage_statuses(tags: dict[str, str]) -> dict[str, str]:
    """Each stage's latest status as the parent's tags record it (`churn.stage_status.<stage>`)."""
    return {k.removeprefix(STAGE_STATUS_TAG): v for k, v in tags.items() if k.startswith(STAGE_STATUS_TAG)}


def settle_parent(store: Store, parent_id: str) -> str:
    """End a parent run with its children's status, read from the store (each stage's latest run; see
    `parent_status`), and record them in its stage-status tags; left as it is while one runs (RUNNING is
    returned). For parents whose stages could not settle them (their process died): a stage that ends settles
    its parent from the tags it already has, without this search."""
    from mlflow.entities import RunTag

    children = store.client.search_runs(
        [store.experiment_id], filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent_id}'", max_results=1000
    )
    latest: dict[str, Any] = {}
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        latest[child.data.tags.get(STAGE_TAG) or child.info.run_name or child.info.run_id] = child
    status = parent_status(child.info.status for child in latest.values())
    if status != "RUNNING":  # a stage that starts sets RUNNING itself (here it could undo a later stage's end)
        tags = [RunTag(f"{STAGE_STATUS_TAG}{stage}", child.info.status) for stage, child in latest.items()]
        if tags:
            store.client.log_batch(parent_id, tags=tags)
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


UPLOADS = 4  # artifact uploads to a server at once
# MLflow's limits for one log_batch call (REST and SQL stores alike).
BATCH_PARAMS, BATCH_TAGS, BATCH_METRICS, BATCH_ENTITIES = 100, 100, 1000, 1000


def batches(params: list, metrics: list, tags: list) -> Iterator[tuple[list, list, list]]:
    """Params, metrics and tags in as few log_batch calls as MLflow's limits allow (100 params, 100 tags,
    1,000 metrics, 1,000 entities a call): each call filled before the next begins."""
    params, metrics, tags = list(params), list(metrics), list(tags)
    while params or metrics or tags:
        take_params = params[:BATCH_PARAMS]
        take_tags = tags[: min(BATCH_TAGS, BATCH_ENTITIES - len(take_params))]
        take_metrics = metrics[: min(BATCH_METRICS, BATCH_ENTITIES - len(take_params) - len(take_tags))]
        yield take_params, take_metrics, take_tags
        params, metrics, tags = params[len(take_params) :], metrics[len(take_metrics) :], tags[len(take_tags) :]


@dataclass
class Records:
    """What a run is given, kept until it is sent: params and tags by key (the last value wins), metrics."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list = field(default_factory=list)  # mlflow.entities.Metric
    tags: dict[str, str] = field(default_factory=dict)

    def send(self, store: Store, run_id: str) -> None:
        """All of it in as few log_batch calls as the limits allow; nothing is kept once sent."""
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in self.params.items()]
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        for chunk_params, chunk_metrics, chunk_tags in batches(params, self.metrics, tags):
            store.client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags)
        self.params, self.metrics, self.tags = {}, [], {}


@dataclass(frozen=True)
class Started:
    """A stage's run as created: its id, its artifact location, its parent (None for a stage run by hand)."""

    run_id: str
    artifact_uri: str
    parent: Parent | None


@dataclass
class StageRun:
    """One stage's MLflow run. Params, metrics, tags and dataset inputs are kept in the process and sent
    when the stage ends (`stage_run`): a few requests a stage, whatever it logs. Artifacts go straight to the
    run's artifact location, to a server in the background (`log_artifact`), all of them before the run ends."""

    store: Store
    start: Started | Future  # the run as created, or the creation under way (against a server)
    has_parent: bool = False
    data_md5: str = ""  # of the stage's inputs, as tagged (data.md5)
    output_md5: dict[str, str] = field(default_factory=dict)
    own: Records = field(default_factory=Records)
    parent: Records = field(default_factory=Records)
    inputs: list = field(default_factory=list)  # mlflow.entities.DatasetInput
    _repository: Any = None  # the run's artifact repository, once an artifact is logged
    _uploader: ThreadPoolExecutor | None = None
    _snapshots: Path | None = None  # the files being uploaded, as they were logged
    _uploads: list[Future] = field(default_factory=list)

    def started(self) -> Started:
        """The run as created: waits for its creation when that is under way, and raises its error (one line)."""
        if isinstance(self.start, Future):
            try:
                with phase("logging"):
                    self.start = self.start.result()
            except ChurnError:
                raise
            except Exception as exc:  # noqa: BLE001 - MLflow, HTTP and database errors alike
                raise explain(exc, self.store.uri) from None
        return self.start

    @property
    def run_id(self) -> str:
        return self.started().run_id

    @property
    def parent_id(self) -> str | None:
        parent = self.started().parent
        return parent.run_id if parent else None

    @property
    def artifact_uri(self) -> str:
        return self.started().artifact_uri

    def log_params(self, params: dict[str, Any], parent: bool = True) -> None:
        items = {k: v[:6000] for k, v in flatten(params).items()}
        for records in self._targets(parent):
            records.params.update(items)

    def log_metrics(
        self,
        metrics: dict[str, float],
        prefix: str = "",
        parent: bool = True,
        *,
        model_id: str | None = None,
        dataset: tuple[str, str] | None = None,
    ) -> None:
        """`model_id` and `dataset` (name, digest) link the metrics to a logged model and an input dataset
        (this run only), as `mlflow.log_metrics(model_id=..., dataset=...)` does."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        for records in self._targets(parent and model_id is None):
            records.metrics.extend(
                Metric(f"{prefix}{k}", float(v), now, 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
                for k, v in metrics.items()
            )

    def log_steps(self, steps: list[dict[str, float]], prefix: str = "") -> None:
        """One metric series per key, step = position in `steps` (e.g. cross-validation folds); this run only."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.own.metrics.extend(
            Metric(f"{prefix}{k}", float(v), now, step) for step, row in enumerate(steps) for k, v in row.items()
        )

    def set_tags(self, tags: dict[str, str], parent: bool = False) -> None:
        for records in self._targets(parent):
            records.tags.update(tags)

    def log_inputs(self, inputs: list) -> None:
        """Dataset inputs (mlflow.entities.DatasetInput), sent in one call when the stage ends."""
        self.inputs.extend(inputs)

    @timed("logging")
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file: one request, to the location the run was created with (no lookup). To a server it
        goes in the background while the stage goes on (up to UPLOADS at once), from a snapshot of the file (a
        hard link, else a copy: the stage may publish or rewrite it meanwhile); the run does not end before
        every upload has, and a failed one fails the stage (`wait_for_uploads`)."""
        import shutil
        import tempfile

        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if self._repository is None:
            self._repository = get_artifact_repository(self.artifact_uri, tracking_uri=self.store.uri)
        if is_local_store(self.store.uri):
            self._repository.log_artifact(str(path), artifact_path)
            return
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(max_workers=UPLOADS, thread_name_prefix="mlflow-upload")
            self._snapshots = Path(tempfile.mkdtemp(prefix="churn-uploads-"))
        snapshot = Path(tempfile.mkdtemp(dir=self._snapshots)) / Path(path).name  # the file's name is kept
        try:
            os.link(path, snapshot)
        except OSError:  # another file system
            shutil.copyfile(path, snapshot)
        self._uploads.append(self._uploader.submit(self._repository.log_artifact, str(snapshot), artifact_path))

    def wait_for_uploads(self, cancel: bool = False) -> None:
        """Until every upload has ended; the first failure is raised (`cancel`: drop those not yet begun)."""
        if self._uploader is None:
            return
        import shutil

        uploads, self._uploads = self._uploads, []
        self._uploader.shutdown(wait=True, cancel_futures=cancel)
        self._uploader = None
        if self._snapshots is not None:
            shutil.rmtree(self._snapshots, ignore_errors=True)
            self._snapshots = None
        for upload in uploads:
            if not upload.cancelled():
                upload.result()

    @timed("logging")
    def record_outputs(self, staged: dict[str, Path]) -> None:
        """Tag the run with the md5 of each output (as dvc.lock will record it), so results restored
        from DVC's run-cache can be traced back to the run that computed them."""
        from churn.system import file_md5

        self.started()  # before the stage publishes anything, its run exists (or the stage fails here)
        self.output_md5 = {final: file_md5(path) for final, path in staged.items()}
        self.set_tags({f"dvc.out.{final}": md5 for final, md5 in self.output_md5.items()})

    @timed("logging")
    def send(self) -> None:
        """Send what this run was given: its records and its dataset inputs (one call), side by side."""
        inputs, self.inputs = self.inputs, []
        calls = [partial(self.own.send, self.store, self.run_id)]
        if inputs:
            calls.append(partial(self.store.client.log_inputs, self.run_id, datasets=inputs))
        side_by_side(self.store, *calls)

    def _targets(self, parent: bool) -> list[Records]:
        return [self.own, self.parent] if parent and self.has_parent else [self.own]


def side_by_side(store: Store, *calls: Callable[[], object]) -> None:
    """Run independent calls to the store, each to its end; the first error is raised. Against a server they run
    in threads, so that their round trips overlap; against a local store one after the other (its writes are
    serialised anyway)."""
    if len(calls) < 2 or is_local_store(store.uri):
        for call in calls:
            call()
        return
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="mlflow") as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def _end(run: StageRun, stage: str, status: str) -> None:
    """Wait for the uploads; send the run's records and end it with `status`; beside that, give the parent the
    stage's share (its params, metrics and this stage's status) and end it with the status its stages' latest
    statuses give. Every record is on the store when this returns."""
    parent = run.started().parent
    run.wait_for_uploads(cancel=status != "FINISHED")

    def own() -> None:
        run.send()
        run.store.client.set_terminated(run.run_id, status)

    if parent is None:
        own()
        return
    statuses = {**stage_statuses(parent.tags), stage: status}
    run.parent.tags[f"{STAGE_STATUS_TAG}{stage}"] = status
    run.parent.tags[EXECUTION_TAG] = execution_tag()

    def parents() -> None:
        run.parent.send(run.store, parent.run_id)
        run.store.client.set_terminated(parent.run_id, parent_status(statuses.values()))

    side_by_side(run.store, own, parents)


@contextmanager
def stage_run(stage: str, settings: MlflowParams, inputs: list[Path]) -> Iterator[StageRun]:
    """One MLflow run for one stage execution, under the pipeline's parent run.

    On success the run (and the parent, for now) ends FINISHED; on any error both end FAILED (KILLED for
    Ctrl-C, SIGTERM, SIGHUP) with the error as a tag, and the error propagates.

    Requests (to a server; the same calls to a local store): the store's health and experiment (before the
    stage begins: an unreachable server or refused credentials stop it at once); then, while the stage works,
    the parent search (once per execution also the dead-run search and the parent's creation), the run's
    creation with all its tags and the parent back to RUNNING; at the end one log_batch per 100 params (dataset
    inputs in one more call), the run's end, one log_batch and the end for the parent. Artifacts: one upload
    per file. docs/tracking.md, "What a run costs the store".
    """
    from mlflow.tracking.context import registry as context_registry

    from churn.system import combined_md5
    from churn.timing import phase

    with phase("store"):  # importing MLflow is part of opening the store
        store = connect(settings.experiment, settings.tracking_uri)  # reachable, and the credentials good
    with phase("logging"):
        context = {**git_tags(), **dvc_tags()}
        key = pipeline_key(context.get("git.commit", ""))
        tags = {
            **context,
            **process_tags(),
            STAGE_TAG: os.environ.get("DVC_STAGE", stage),
            "data.md5": combined_md5(inputs) if inputs else "",
        }

    def begin() -> Started:
        parent = find_or_create_parent(store, context, key) if key else None
        if parent:
            tags[PARENT_ID_TAG] = parent.run_id
        resolved = context_registry.resolve_tags(tags)
        made: list = []
        calls = [lambda: made.append(store.client.create_run(store.experiment_id, run_name=stage, tags=resolved))]
        if parent and parent.status != "RUNNING":
            # A stage runs; an earlier one ended it. One request (update_run would read the run first); the end
            # time it sets is replaced when the parent ends again.
            calls.append(partial(store.client.set_terminated, parent.run_id, "RUNNING"))
        side_by_side(store, *calls)
        log.info("MLflow run %s (stage %s) in %s", made[0].info.run_id, stage, redact(store.uri))
        return Started(made[0].info.run_id, made[0].info.artifact_uri, parent)

    if is_local_store(store.uri):
        start = _completed(begin)
    else:
        # Against a server the run is created while the stage works: its round trips overlap the stage's
        # first reads. The stage waits for it before it records or publishes an output (StageRun.started).
        starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-start")
        start = starter.submit(begin)
        starter.shutdown(wait=False)
    run = StageRun(store=store, start=start, has_parent=key is not None, data_md5=tags["data.md5"])
    if is_local_store(store.uri):
        run.started()  # a local store's error stops the stage before it begins
    try:
        yield run
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            run.own.tags["error"] = str(exc)[:4000] or type(exc).__name__
            _end(run, stage, status)
        except Exception:  # noqa: BLE001 - the original error matters more (it may be the run's own creation)
            log.warning("could not mark the MLflow run of stage %s as %s", stage, status)
        raise
    try:
        with phase("logging"):
            _end(run, stage, "FINISHED")
    except ChurnError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, store.uri) from None


def _completed(call: Callable[[], Started]) -> Future:
    """`call`'s result (or error) as a completed Future: the same path as a creation run in a thread."""
    future: Future = Future()
    try:
        future.set_result(call())
    except BaseException as exc:  # noqa: BLE001 - handed over whole, as a thread would
        future.set_exception(exc)
    return future


SCHEMA_ROWS = 1000


def log_datasets(run: StageRun, datasets: list[tuple]) -> None:
    """Log tables as MLflow dataset inputs of `run` (sent with its records, in one call): (frame, name, context,
    source, digest, target column or None, rows). `frame` may be the table's first rows only (a stage that
    reads it in batches); `rows` is the whole table's row count, which the dataset's profile reports.

    The digest is the file's md5 as dvc.lock records it (`<path>@md5:<md5>` is the source), and column types
    are inferred from the first rows: MLflow's own digest and schema inference look at every value of every
    text column in Python (0.5 s at 20k rows, growing with the data). Whether a column may be missing is
    decided on all the rows of `frame`."""
    import warnings

    with warnings.catch_warnings(), phase("logging"):
        warnings.simplefilter("ignore", UserWarning)  # the integer-schema hint: the target is 0/1 by design
        run.log_inputs(
            [
                dataset_input(frame, name, context, f"{source}@md5:{digest}", digest, targets, rows)
                for frame, name, context, source, digest, targets, rows in datasets
            ]
        )


def dataset_input(frame, name: str, context: str, source: str, digest: str, targets: str | None, rows: int):
    """An mlflow.entities.DatasetInput for a table, as `mlflow.log_input(dataset, context=...)` makes it."""
    from functools import cached_property

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    class SampledSchemaDataset(PandasDataset):
        @cached_property
        def schema(self) -> Schema:
            inferred = infer_signature(self.df.head(SCHEMA_ROWS)).inputs
            missing = self.df.isna().any()
            return Schema([ColSpec(col.type, col.name, required=not missing[col.name]) for col in inferred.inputs])

        @property
        def profile(self) -> dict:
            return {"num_rows": rows, "num_elements": rows * self.df.shape[1]}

    dataset = SampledSchemaDataset(
        frame, source=resolve_dataset_source(source), targets=targets, name=name, digest=digest
    )
    fields = dataset.to_dict()  # name, digest, source_type, source, schema, profile
    entity = Dataset(**{k: fields.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")})
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
