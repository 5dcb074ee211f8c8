"""tune: an Optuna study over one model family's hyper-parameters, scored exactly as the train stage scores.

in: data/prepared/train.parquet, models/preprocessor.pkl (the featurize outputs; run `make run` first)
out: tune.best_params (default tune/best_params.json); with --apply, a DVC experiment | params: tune, model, train

The objective is the cross-validated `tune.metric` on the train split, through the train stage's own code
path (`churn.core.models.iter_cv_folds` with train.cv_folds, train.seed, evaluate.threshold), so applying the best
trial with `dvc exp run -S ...` reproduces its CV score. Each fold is reported to a median pruner.
The study lives in an Optuna storage (sqlite under the repository root by default, or PostgreSQL shared by
workers on several machines); re-running continues it. MLflow gets one parent run per study and one nested
run per trial.

Workers: `--workers N` starts N processes of this tool on one study; the same command on other hosts (a clone
at the same commit, with the same data) joins it. A run ends when the study has `--trials` more finished
trials than when it started, whoever runs them. Workers send heartbeats to the storage; a worker that stops
sending them (killed, crashed, host lost) has its trial failed and queued again by the others, and that
trial's MLflow run ended FAILED. Usage: `python -m churn.tools.tune [--trials N] [--timeout S] [--storage URL]
[--study NAME] [--family F] [--workers N] [--apply]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.config import LOWER_IS_BETTER, MODEL_TYPES, ModelParams, Params
from churn.errors import ChurnError, DataError
from churn.system import atomic_path, first_line
from churn.tools.settings import Dimension, TuneSettings, param_key

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from churn.tracking.store import Store

log = logging.getLogger(__name__)

STORE_FILE = "optuna.db"
STUDY_ROLE = "study"
TRIAL_ROLE = "trial"
# Metrics that depend on evaluate.threshold (the others are computed from probabilities alone).
THRESHOLD_METRICS = frozenset({"accuracy", "precision", "recall", "f1"})
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")
# Study user attributes: what its scores depend on, its identity in MLflow, the current run, the last summary.
FINGERPRINT_ATTR = "churn"
UID_ATTR = "churn.uid"
RUN_ATTR = "churn.run"
SUMMARY_ATTR = "churn.summarised"
# Trial user attributes: the worker running it, and the trial's own number (a retry inherits the original's).
WORKER_ATTR = "worker"
ORIGIN_ATTR = "trial"
FINISHED = ("COMPLETE", "PRUNED")
SETTLE_POLL_S = 1.0  # how often a worker that is done looks at the trials others are still running


# --- settings: the tune block (validated by churn.tools.settings) with its defaults resolved -------


def default_storage(root: Path | None = None) -> str:
    from churn.tracking.store import repo_root

    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def resolve_storage(url: str | None, root: Path | None = None) -> str:
    """The storage URL to use: the default sqlite file, or `url` with a relative sqlite path made absolute."""
    from churn.tracking.store import absolute_uri, repo_root

    if not url:
        return default_storage(root)
    return absolute_uri(url, root or repo_root())


def resolve(settings: TuneSettings, model_type: str) -> TuneSettings:
    """`settings` with no null left in family (model.type), study_name and storage (an absolute URL)."""
    family = settings.family or model_type
    settings.space_of(family)  # a family without a search space fails here, before the data is read
    study_name = settings.study_name or f"churn-{family}-{settings.metric}"
    return settings.model_copy(
        update={"family": family, "study_name": study_name, "storage": resolve_storage(settings.storage)}
    )


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def suggest(trial: optuna.Trial, key: str, dim: Dimension) -> Any:
    """A value of one searched hyper-parameter; the bounds have its type (int bounds: an integer search)."""
    if dim.choices is not None:
        return trial.suggest_categorical(key, list(dim.choices))
    if isinstance(dim.low, int) and isinstance(dim.high, int):
        return trial.suggest_int(key, dim.low, dim.high, log=dim.log)
    return trial.suggest_float(key, dim.low, dim.high, log=dim.log)


def trial_model(model: ModelParams, family: str, values: dict[str, Any]) -> ModelParams:
    """`model` with the family switched to `family` and the searched values (keyed by hyper-parameter) set."""
    if family == "logistic_regression":
        return model.model_copy(update={"type": family, **values})
    return model.model_copy(update={"type": family, family: getattr(model, family).model_copy(update=values)})


# --- sampling: TPE seeded per trial --------------------------------------------------------------


def seeded_tpe(seed: int):
    """A TPE sampler whose randomness for trial n is seeded with seed + n.

    A re-run proposes the same trials given the same history, a continued study does not repeat its
    first proposals, and concurrent workers on one study (different trial numbers) do not duplicate each
    other, which one shared seed would do for every random start-up trial.
    """
    from optuna.samplers import BaseSampler, TPESampler

    class TrialSeededTPE(BaseSampler):
        def __init__(self) -> None:
            self._tpe = TPESampler(seed=seed)

        def before_trial(self, study, trial) -> None:
            self._tpe = TPESampler(seed=(seed + trial.number) % 2**32)
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

    return TrialSeededTPE()


# --- storage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """How workers notice each other's death: each running trial writes a heartbeat to the storage every
    `heartbeat_interval` s; a trial without one for `grace_period` s is failed by the next worker that looks, and
    queued again (at most `max_retry` times, so parameters that kill their worker do not kill them all)."""

    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 2


def _first_line(exc: BaseException) -> str:
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
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({_first_line(exc)})") from None


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
            raise ChurnError(f"cannot reach the Optuna gRPC proxy {url} ({_first_line(exc)})") from None
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
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({_first_line(exc)})") from None


def fail_stale(study) -> None:
    """Fail the study's trials whose workers stopped sending heartbeats (their callback queues them again)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def study_fingerprint(settings: TuneSettings, params: Params, data_md5: str) -> dict[str, Any]:
    """What a study's scores depend on; continuing a study under different values would mix incomparable
    trials, so a mismatch is an error."""
    found = {
        "family": settings.family,
        "metric": settings.metric,
        "data_md5": data_md5,
        "train.cv_folds": params.train.cv_folds,
        "train.seed": params.train.seed,
    }
    if settings.metric in THRESHOLD_METRICS:
        found["evaluate.threshold"] = params.evaluate.threshold
    return found


def load_or_create_study(storage, settings: TuneSettings, fingerprint: dict[str, Any]):
    import optuna

    from churn.tracking.store import redact

    if is_grpc(settings.storage) and settings.study_name not in optuna.get_all_study_names(storage):
        raise ChurnError(
            f"study {settings.study_name!r} does not exist behind the gRPC proxy {settings.storage}; create it "
            "through the database first: make tune TRIALS=0 STORAGE=<the proxy's database URL>"
        )
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        direction=direction(settings.metric),
        sampler=seeded_tpe(settings.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner.n_startup_trials, n_warmup_steps=settings.pruner.n_warmup_steps
        ),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        return study
    for key, value in fingerprint.items():
        if recorded.get(key) != value:
            raise ChurnError(
                f"study {settings.study_name!r} in {redact(settings.storage)} was run with "
                f"{key}={recorded.get(key)!r}, now {value!r}; set tune.study_name (or --study) to start a new study"
            )
    return study


# --- runs: several workers, one target ----------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tally(study) -> dict[str, int]:
    """The study's trials by state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    import optuna

    counts = {state.name: 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def run_is_open(record: dict[str, Any], finished: int, running: int, now: float) -> bool:
    """Whether a run recorded in a study still goes on: it has trials to go, and a worker at work (a trial
    running, stale ones failed first) or it started less than a grace period ago (its workers are starting)."""
    return finished < record["target"] and (running > 0 or now - record["started"] < record["grace_period"])


def join_run(study, n_trials: int, faults: Faults, tags: dict[str, str], worker: str) -> int:
    """The number of finished (complete or pruned) trials at which this worker stops: the open run's, which it
    joins when it is at the same commit, or `n_trials` more than the study has now, as a new run.

    Called under storage_lock. Data and CV settings are checked for the whole study (study_fingerprint); the
    commit only within a run, so a study can be continued after the code changed, but not mixed within a run.
    """
    counts = tally(study)
    finished = sum(counts[s] for s in FINISHED)
    commit = tags.get("git.commit")
    record = study.user_attrs.get(RUN_ATTR)
    if record and run_is_open(record, finished, counts["RUNNING"], time.time()):
        if record.get("commit") != commit:
            theirs, mine = (c[:12] if c else "no git commit" for c in (record.get("commit"), commit))
            raise ChurnError(
                f"study {study.study_name!r} is being tuned at commit {theirs} (run started by {record.get('by')}); "
                f"this worker is at {mine}: check out {theirs} (and its data: bin/dvc pull), or tune another "
                "study (--study)"
            )
        log.info(
            "joined the run of study %r started by %s: until %d finished trials (%d so far, %d running)",
            study.study_name,
            record.get("by"),
            record["target"],
            finished,
            counts["RUNNING"],
        )
        return int(record["target"])
    record = {
        "target": finished + n_trials,
        "commit": commit,
        "started": time.time(),
        "grace_period": faults.grace_period,
        "by": worker,
    }
    study.set_user_attr(RUN_ATTR, record)
    return record["target"]


class StaleTrials:
    """What to do with a trial whose worker stopped sending heartbeats (Optuna's fail_stale_trials, which every
    worker runs before each trial, has just marked it FAIL): end its MLflow run FAILED, and queue its parameters
    again with Optuna's RetryHeartbeatStaleTrialCallback (formerly RetryFailedTrialCallback)."""

    def __init__(self, max_retry: int) -> None:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.max_retry = max_retry
        self.tracker: TrialLogger | None = None

    def __call__(self, study, trial) -> None:
        worker = trial.user_attrs.get(WORKER_ATTR, "an unknown worker")
        retried = len(trial.system_attrs.get("retry_history", []))
        again = "queued again" if retried < self.max_retry else f"not queued again (retried {retried} times)"
        log.warning("trial %d: worker %s stopped sending heartbeats; marked FAIL, %s", trial.number, worker, again)
        if self.tracker is not None:
            self.tracker.end_lost(trial.number, f"worker {worker} stopped sending heartbeats (killed or lost)")
        self.requeue(study, trial)

    def requeue(self, study, trial) -> None:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry(study, trial)

    def requeue_interrupted(self, study, number: int | None) -> None:
        """Queue again the trial this worker was running when it was told to stop (Ctrl-C, SIGTERM)."""
        if number is None:
            return
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if trial is not None and trial.state.name == "FAIL":
            self.requeue(study, trial)


# --- MLflow: one parent per study, one nested run per trial --------------------------------------


def _parent_attr(store: Store) -> str:
    digest = hashlib.md5(store.uri.encode()).hexdigest()[:12]  # noqa: S324 - a key, not security
    return f"mlflow_parent_run:{digest}"


def _find_parent(store: Store, study, uid: str) -> str | None:
    """The study's parent run in this store: the id the study recorded for this store URI, else the run tagged
    with the study's uid (found whatever URI another worker reached the same store by)."""
    from mlflow.exceptions import MlflowException

    from churn.tracking.runs import PARENT_TAG

    run_id = study.user_attrs.get(_parent_attr(store))
    if run_id:
        try:
            run = store.client.get_run(run_id)
            if run.info.lifecycle_stage == "active" and run.info.experiment_id == store.experiment_id:
                return run_id
        except MlflowException:
            pass
    found = store.client.search_runs(
        [store.experiment_id],
        filter_string=f"tags.`optuna.study_uid` = '{uid}' and tags.`{PARENT_TAG}` = '{STUDY_ROLE}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def study_parent(store: Store, study, settings: TuneSettings, params: Params, data_md5: str) -> str:
    """The study's MLflow parent run in this store, created (with the study's settings as params) the first time.

    Called under storage_lock, so workers that start together create one parent between them; the study
    records a uid, and the parent carries it as a tag, so workers on several machines find the same one."""
    from mlflow.entities import Param
    from mlflow.tracking.context import registry as context_registry

    from churn.tracking.runs import PARENT_TAG, flatten, git_tags
    from churn.tracking.store import redact

    uid = study.user_attrs.get(UID_ATTR)
    if uid is None:
        uid = uuid.uuid4().hex
        study.set_user_attr(UID_ATTR, uid)
    attr = _parent_attr(store)
    run_id = _find_parent(store, study, uid)
    if run_id:
        store.client.update_run(run_id, status="RUNNING")
        if study.user_attrs.get(attr) != run_id:
            study.set_user_attr(attr, run_id)
        return run_id
    tags = {
        **git_tags(),
        PARENT_TAG: STUDY_ROLE,
        "optuna.study": settings.study_name,
        "optuna.study_uid": uid,
        "optuna.storage": redact(settings.storage),
        "optuna.family": settings.family,
        "optuna.metric": settings.metric,
        "optuna.direction": direction(settings.metric),
        "data.md5": data_md5,
    }
    run = store.client.create_run(
        store.experiment_id, run_name=f"tune:{settings.study_name}", tags=context_registry.resolve_tags(tags)
    )
    space = {
        param_key(settings.family, name): (
            list(d.choices) if d.choices is not None else f"{d.low}..{d.high}{' log' if d.log else ''}"
        )
        for name, d in settings.space_of(settings.family).items()
    }
    logged = {
        "tune": settings.model_dump(include={"family", "metric", "seed", "pruner"}),
        "space": space,
        "train": {"cv_folds": params.train.cv_folds, "seed": params.train.seed},
        "evaluate": {"threshold": params.evaluate.threshold},
    }
    store.client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in flatten(logged).items()])
    study.set_user_attr(attr, run.info.run_id)
    log.info("MLflow parent run %s for study %r", run.info.run_id, settings.study_name)
    return run.info.run_id


@dataclass
class TrialLogger:
    """Writes one nested MLflow run per trial, as the trial happens, tagged with the worker (host and pid)."""

    store: Store
    parent_id: str
    settings: TuneSettings
    worker: str
    context: dict[str, str]
    numbers: list[int] = field(default_factory=list)  # the trials this process ran
    retries: int = 0  # of which retries of trials whose workers were lost
    current: int | None = None  # the trial started last
    pending: dict[str, list] = field(default_factory=dict)  # fold scores not yet written, by run

    @property
    def fresh(self) -> int:
        """Trials this process sampled itself (not retries)."""
        return len(self.numbers) - self.retries

    def start(self, number: int, model: ModelParams, retry_of: int | None = None) -> str:
        from mlflow.entities import Param
        from mlflow.tracking.context import registry as context_registry

        from churn.tracking.runs import PARENT_TAG

        host, _, pid = self.worker.rpartition(":")
        tags = {
            **self.context,
            "mlflow.parentRunId": self.parent_id,
            PARENT_TAG: TRIAL_ROLE,
            "optuna.study": self.settings.study_name,
            "optuna.trial": str(number),
            "optuna.state": "RUNNING",
            "optuna.worker": self.worker,
            "optuna.worker.host": host,
            "optuna.worker.pid": pid,
        }
        if retry_of is not None:
            tags["optuna.retry_of"] = str(retry_of)
            self.retries += 1
        self.numbers.append(number)
        self.current = number
        run = self.store.client.create_run(
            self.store.experiment_id, run_name=f"trial-{number}", tags=context_registry.resolve_tags(tags)
        )
        hyper = {"model.type": model.type, **{param_key(model.type, k): v for k, v in model.hyperparameters().items()}}
        self.store.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in hyper.items()])
        return run.info.run_id

    def fold(self, run_id: str, index: int, metrics: dict[str, float]) -> None:
        """Keep a fold's scores for the run's last write: each write to MLflow's sqlite store is a commit, and
        writing per fold made a logistic-regression trial about a third slower (0.8 s against 0.6 s, 5 folds of
        16k rows). The pruner reads Optuna's reports, not these."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        pending = self.pending.setdefault(run_id, [])
        pending += [Metric(f"fold_{name}", value, now, index) for name, value in metrics.items()]

    def end(
        self,
        run_id: str,
        state: str,
        summary: dict[str, float] | None = None,
        error: str = "",
        interrupted: bool = False,
    ) -> None:
        """The fold scores, the summary and the final state in one write, then the run's status."""
        from mlflow.entities import Metric, RunTag

        metrics = self.pending.pop(run_id, [])
        now = int(time.time() * 1000)
        metrics += [Metric(f"cv_{k}", v, now, 0) for k, v in (summary or {}).items()]
        tags = [RunTag("optuna.state", state)] + ([RunTag("error", error[:4000])] if error else [])
        self.store.client.log_batch(run_id, metrics=metrics, tags=tags)
        status = "KILLED" if interrupted else {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.store.client.set_terminated(run_id, status)

    def end_lost(self, number: int, error: str) -> None:
        """End the MLflow run of trial `number`, whose worker is gone, FAILED (it would stay RUNNING for ever)."""
        try:
            found = self.store.client.search_runs(
                [self.store.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`optuna.trial` = '{number}'",
            )
            for run in found:
                if run.info.status == "RUNNING":
                    self.end(run.info.run_id, "FAIL", error=error)
        except Exception as exc:  # noqa: BLE001 - the study goes on; the run stays RUNNING, and the log says why
            log.warning("could not end the MLflow run of trial %d (%s)", number, _first_line(exc))


# --- the objective ---------------------------------------------------------------------------------


def make_objective(settings: TuneSettings, params: Params, frame: pd.DataFrame, preprocessor, tracker: TrialLogger):
    """Score a trial as the train stage would (same folds, seed and threshold); prune between folds."""
    import optuna

    from churn.core.models import build_model, calibrated, iter_cv_folds, summarise_folds

    folds = params.train.cv_folds
    space = settings.space_of(settings.family)

    def objective(trial: optuna.Trial) -> float:
        # A retried trial inherits the user attributes of the trial it replaces: the original's number.
        origin = trial.user_attrs.get(ORIGIN_ATTR)
        values = {name: suggest(trial, param_key(settings.family, name), dim) for name, dim in space.items()}
        model = trial_model(params.model, settings.family, values)
        run_id = tracker.start(trial.number, model, retry_of=origin)
        # Who runs the trial (its MLflow run exists from here on), for whoever finds it stale.
        trial.set_user_attr(WORKER_ATTR, tracker.worker)
        trial.set_user_attr(ORIGIN_ATTR, trial.number)
        fold_metrics: list[dict[str, float]] = []
        try:
            estimator = build_model(model, params.train.seed, params.train.n_jobs)
            estimator = calibrated(estimator, params.train.calibration, folds)
            cv = iter_cv_folds(
                preprocessor,
                estimator,
                frame,
                params.data.target,
                folds,
                params.train.seed,
                params.evaluate.threshold,
            )
            for index, metrics in enumerate(cv):
                fold_metrics.append(metrics)
                tracker.fold(run_id, index, metrics)
                trial.report(metrics[settings.metric], index)
                # The last fold is never pruned: its work is done, and its score is the trial's result.
                if index < folds - 1 and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {index + 1} of {folds}")
            summary = summarise_folds(fold_metrics)
        except optuna.TrialPruned:
            tracker.end(run_id, "PRUNED")
            raise
        except KeyboardInterrupt:
            tracker.end(run_id, "FAIL", error="interrupted (Ctrl-C or SIGTERM); queued again", interrupted=True)
            raise
        except BaseException as exc:
            tracker.end(run_id, "FAIL", error=_first_line(exc))
            raise
        tracker.end(run_id, "COMPLETE", summary)
        return summary[settings.metric]

    return objective


def work(study, objective, target: int, n_trials: int, timeout_s, faults: Faults, tracker, stale, progress) -> None:
    """Run trials until the study has `target` finished trials (counting those other workers are running and
    the queued retries), or this process has sampled `n_trials`, or `timeout_s` has passed.

    Then wait while other workers' trials run: one whose worker dies goes stale after the grace period, is
    failed and queued again, and this worker runs it. So a run ends with no trial left RUNNING."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def stop_at_target(study, _trial) -> None:
        counts = tally(study)
        if not counts["WAITING"] and sum(counts[s] for s in (*FINISHED, "RUNNING")) >= target:
            study.stop()

    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        counts = tally(study)
        unclaimed = target - sum(counts[s] for s in (*FINISHED, "RUNNING", "WAITING"))
        todo = max(0, min(n_trials - tracker.fresh, unclaimed)) + counts["WAITING"]
        if todo:
            try:
                study.optimize(
                    objective,
                    n_trials=todo,
                    timeout=left,
                    catch=(Exception,),
                    callbacks=[stop_at_target],
                    show_progress_bar=progress,
                    gc_after_trial=False,
                )
            except KeyboardInterrupt:
                stale.requeue_interrupted(study, tracker.current)
                raise
            continue
        if not counts["RUNNING"]:
            return
        time.sleep(min(faults.heartbeat_interval, SETTLE_POLL_S))  # others' trials usually end within seconds
        fail_stale(study)


# --- after the trials: best parameters, parent summary, plots ------------------------------------


def best_record(study, settings: TuneSettings) -> dict[str, Any] | None:
    """The study's best trial as the parameters to set (`model.type` first), or None before any completes."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    from churn.tracking.store import redact

    return {
        "study": settings.study_name,
        "storage": redact(settings.storage),
        "metric": settings.metric,
        "direction": direction(settings.metric),
        "trial": best.number,
        "value": best.value,
        "params": {"model.type": settings.family, **best.params},
    }


def write_best(record: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as staged:
        staged.write_text(json.dumps(record, indent=2) + "\n")  # json writes floats with repr: exact round trip
    log.info("wrote %s (trial %d, %s %s)", path, record["trial"], record["metric"], record["value"])


def save_plots(study, folder: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and parallel coordinates, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    written = []
    for name in PLOTS:
        if not complete or (name == "param_importances" and len(complete) < 2):
            log.info("skipped the %s plot: it needs more completed trials", name)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(plots, f"plot_{name}")(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a parameter that never varied
            log.warning("could not draw the %s plot (%s)", name, _first_line(exc))
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def summarise_study(store: Store, parent_id: str, study, settings: TuneSettings, record: dict | None) -> None:
    """Counts, the best trial and the plots on the study's parent run."""
    import tempfile

    import optuna
    from mlflow.entities import Metric, RunTag

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    now, step = int(time.time() * 1000), len(trials)
    metrics = [Metric(f"trials_{state}", float(n), now, step) for state, n in counts.items() if n]
    tags = []
    if record:
        metrics.append(Metric(f"best_cv_{settings.metric}", float(record["value"]), now, step))
        tags.append(RunTag("best.trial", str(record["trial"])))
        for key, value in record["params"].items():
            tags.append(RunTag(f"best.{key}", repr(value) if isinstance(value, float) else str(value)))
    store.client.log_batch(parent_id, metrics=metrics, tags=tags)  # the best trial's tags too: one request
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(study, Path(tmp)):
            store.client.log_artifact(parent_id, str(path), "plots")
        if record:
            best = Path(tmp) / "best_params.json"
            best.write_text(json.dumps(record, indent=2) + "\n")
            store.client.log_artifact(parent_id, str(best))
    store.client.set_terminated(parent_id, "FINISHED")


# --- apply: the best parameters as a DVC experiment -----------------------------------------------


def _override(value: Any) -> str:
    """A value as `dvc exp run -S key=value` parses it back exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def apply_command(record: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "dvc", "exp", "run"]
    for key, value in record["params"].items():
        command += ["-S", f"{key}={_override(value)}"]
    return command


def apply_best(path: Path) -> str:
    """Run the best parameters in `path` as a DVC experiment (train, evaluate, register as for any run);
    returns the experiment's name."""
    if not path.exists():
        raise ChurnError(f"{path}: not found; run `make tune` until a trial completes, then apply")
    record = json.loads(path.read_text())
    command = apply_command(record)
    from churn.system import check_dvc_lock

    check_dvc_lock()  # a dvc.lock left empty by a killed run: restored, or one line saying how
    log.info("applying trial %s of study %r: %s", record["trial"], record["study"], " ".join(command[2:]))
    name = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            found = re.search(r"Ran experiment\(s\):\s*(\S+)", line)
            name = found.group(1) if found else name
    if proc.returncode != 0:
        raise ChurnError(f"dvc exp run exited {proc.returncode} applying {path}; see its output above")
    log.info(
        "experiment %s: compare with `dvc exp show`; its CV %s should be %s", name, record["metric"], record["value"]
    )
    return name or ""


# --- the command ---------------------------------------------------------------------------------


def load_inputs(params: Params) -> tuple[pd.DataFrame, Any, str]:
    """The prepared train split and the preprocessor, as the train stage reads them, and their joint md5."""
    from churn.storage.outputs import read_pickle
    from churn.storage.parquet import read_parquet
    from churn.storage.paths import PREPARED_TRAIN as TRAIN
    from churn.storage.paths import PREPROCESSOR
    from churn.system import combined_md5

    for path in (TRAIN, PREPROCESSOR):
        if not path.exists():
            raise DataError(str(path), "not found; tuning scores the pipeline's train split: run `make run` first")
    frame = read_parquet(TRAIN)
    preprocessor = read_pickle(PREPROCESSOR)
    smallest = int(frame[params.data.target].value_counts().min())
    if smallest < params.train.cv_folds:
        raise DataError(
            str(TRAIN), f"smallest class has {smallest} rows; train.cv_folds={params.train.cv_folds} needs more"
        )
    return frame, preprocessor, combined_md5([TRAIN, PREPROCESSOR])


def finish_study(store: Store, parent_id: str, study, settings: TuneSettings) -> dict[str, Any] | None:
    """The best record; the parent run summarised and ended by the last worker out (none of the study's
    trials running), once per state of the study (workers that end together do not redo the plots)."""
    with storage_lock(settings.storage):
        record = best_record(study, settings)
        trials = study.get_trials(deepcopy=False)
        if any(t.state.name == "RUNNING" for t in trials):
            return record  # another worker is still at work; the last one summarises
        if study.user_attrs.get(SUMMARY_ATTR) == len(trials):
            store.client.set_terminated(parent_id, "FINISHED")
        else:
            summarise_study(store, parent_id, study, settings, record)
            study.set_user_attr(SUMMARY_ATTR, len(trials))
    return record


def tune(
    settings: TuneSettings, params: Params, n_trials: int, progress: bool = True, faults: Faults | None = None
) -> dict[str, Any] | None:
    """Run the study of `settings` (resolved) until it has `n_trials` more finished trials (0: none), with
    any other workers on it; returns the best record (also written to tune.best_params)."""
    from churn.tracking.runs import git_tags
    from churn.tracking.store import connect, redact

    faults = faults or Faults()
    check_storage(settings.storage)
    frame, preprocessor, data_md5 = load_inputs(params)
    store = connect(params.mlflow.experiment, params.mlflow.tracking_uri)
    worker = worker_id()
    code = git_tags()
    if n_trials and code.get("git.dirty") == "true":
        log.warning(
            "tracked files differ from commit %s: workers elsewhere run the committed code", code.get("git.commit")
        )
    stale = StaleTrials(faults.max_retry)
    # Workers starting together create the study, its parent run and the run's target once.
    with storage_lock(settings.storage):
        storage = open_storage(settings.storage, faults, stale)
        study = load_or_create_study(storage, settings, study_fingerprint(settings, params, data_md5))
        parent_id = study_parent(store, study, settings, params, data_md5)
        tracker = TrialLogger(store, parent_id, settings, worker, {**code, "data.md5": data_md5})
        stale.tracker = tracker
        target = None
        if n_trials:
            fail_stale(study)
            target = join_run(study, n_trials, faults, code, worker)
    finished = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    log.info(
        "worker %s on study %r in %s: %d finished trials so far; running until %d (%s, %s %s)",
        worker,
        settings.study_name,
        redact(settings.storage),
        finished,
        target or finished,
        settings.family,
        direction(settings.metric),
        settings.metric,
    )
    if is_grpc(settings.storage) and n_trials:
        log.warning("through the gRPC proxy Optuna records no heartbeats: a killed worker's trial stays RUNNING")
    if target is not None:
        objective = make_objective(settings, params, frame, preprocessor, tracker)
        try:
            work(study, objective, target, n_trials, settings.timeout_s, faults, tracker, stale, progress)
        except KeyboardInterrupt:
            if not tally(study)["RUNNING"]:  # the last worker: the study's parent run ends too
                store.client.set_terminated(parent_id, "KILLED")
            raise
    numbers = set(tracker.numbers)
    mine = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    record = finish_study(store, parent_id, study, settings)
    counts = tally(study)
    log.info(
        "worker %s ran %d trials; study %r now has %d (%d complete, %d pruned, %d failed); MLflow parent run %s",
        worker,
        len(mine),
        settings.study_name,
        sum(counts.values()),
        counts["COMPLETE"],
        counts["PRUNED"],
        counts["FAIL"],
        parent_id,
    )
    states = {s: sum(t.state.name == s for t in mine) for s in ("COMPLETE", "PRUNED", "FAIL")}
    if n_trials and states["FAIL"] and not (states["COMPLETE"] or states["PRUNED"]):
        error = next((t.system_attrs.get("fail_reason") for t in mine if t.state.name == "FAIL"), None)
        raise ChurnError(f"every trial failed ({error or 'see the MLflow trial runs for the error'})")
    if record is None:
        log.warning("no trial has completed yet: no best parameters")
        return None
    write_best(record, Path(settings.best_params))
    shown = ", ".join(f"{k}={_override(v)}" for k, v in record["params"].items())
    log.info("best: trial %d, cv %s %.6f with %s", record["trial"], settings.metric, record["value"], shown)
    return record


# --- local workers: N processes of this tool on one study ------------------------------------------


def worker_command(settings: TuneSettings, n_trials: int, faults: Faults) -> list[str]:
    """The command of one worker process: this tool on the same (resolved) study, without --apply."""
    command = [sys.executable, "-m", "churn.tools.tune", "--no-progress", "--workers", "1"]
    command += ["--trials", str(n_trials), "--storage", settings.storage, "--study", settings.study_name]
    command += ["--family", settings.family]
    command += ["--heartbeat-interval", str(faults.heartbeat_interval), "--grace-period", str(faults.grace_period)]
    if settings.timeout_s is not None:
        command += ["--timeout", repr(settings.timeout_s)]
    return command


def run_workers(settings: TuneSettings, n_trials: int, workers: int, faults: Faults) -> None:
    """Start `workers` processes on the study and wait for all of them. They share the run's trials; one that
    fails leaves its trials to the others, and is reported when they are done. SIGTERM is passed on to them
    (each then ends its trial as interrupted and queues it again)."""
    from churn.tracking.store import redact

    if not is_shared(settings.storage):
        raise ChurnError(
            f"--workers {workers} needs a study on a database server, not {redact(settings.storage)} (sqlite takes "
            "one writer at a time): STORAGE=postgresql+psycopg2://user:pw@host:5432/optuna"
        )
    check_storage(settings.storage)
    command = worker_command(settings, n_trials, faults)
    log.info("starting %d workers on study %r in %s", workers, settings.study_name, redact(settings.storage))
    procs: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        procs.extend(subprocess.Popen(command) for _ in range(workers))
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group): let them end their trials
        for proc in procs:
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [(proc.pid, code) for proc, code in zip(procs, codes, strict=True) if code]
    if failed:
        shown = ", ".join(f"pid {pid} exited {code}" for pid, code in failed)
        raise ChurnError(f"{len(failed)} of {workers} workers failed ({shown}); their errors are above")


def best_of(settings: TuneSettings) -> dict[str, Any] | None:
    """The study's best record, written to tune.best_params (after local workers have finished)."""
    import optuna

    study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage))
    record = best_record(study, settings)
    if record is None:
        log.warning("no trial has completed yet: no best parameters")
        return None
    write_best(record, Path(settings.best_params))
    return record


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.tools.settings import load, tune_settings

    defaults = Faults()
    parser = argparse.ArgumentParser(prog="python -m churn.tools.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=_count, help="finished trials to add to the study (default tune.n_trials)")
    parser.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    parser.add_argument("--storage", help="Optuna storage URL, e.g. postgresql+psycopg2://user:pw@host/db")
    parser.add_argument("--study", help="study name (default tune.study_name, else churn-<family>-<metric>)")
    parser.add_argument("--family", choices=MODEL_TYPES, help="model family to tune (default tune.family)")
    parser.add_argument("--workers", type=_positive, default=1, help="worker processes on this host (default 1)")
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive,
        default=defaults.heartbeat_interval,
        help=f"seconds between a running trial's heartbeats (default {defaults.heartbeat_interval})",
    )
    parser.add_argument(
        "--grace-period",
        type=_positive,
        default=defaults.grace_period,
        help=f"seconds without a heartbeat before a trial is failed and retried (default {defaults.grace_period})",
    )
    parser.add_argument("--apply", action="store_true", help="run the best parameters as a DVC experiment")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.grace_period <= args.heartbeat_interval:
        parser.error(
            f"--grace-period ({args.grace_period}) must exceed --heartbeat-interval ({args.heartbeat_interval})"
        )
    faults = Faults(args.heartbeat_interval, args.grace_period)

    def _main() -> None:
        import optuna

        # With a progress bar, the bar shows the best trial so far; without, Optuna logs one line per trial.
        optuna.logging.set_verbosity(logging.WARNING if not args.no_progress else logging.INFO)
        params, raw = load()
        cli = {"timeout_s": args.timeout, "storage": args.storage, "study_name": args.study, "family": args.family}
        settings = resolve(tune_settings(raw, params.model).override(**cli), params.model.type)
        # Not through override, which (as params.yaml) wants n_trials >= 1: --trials 0 --apply applies the best
        # of an existing study without running more trials.
        n_trials = settings.n_trials if args.trials is None else args.trials
        if args.workers > 1 and n_trials:
            run_workers(settings, n_trials, args.workers, faults)
            best_of(settings)
        else:
            # A stopped worker (docker stop, a scheduler's preemption) ends its trial as an interrupted one.
            signal.signal(signal.SIGTERM, _interrupt)
            tune(settings, params, n_trials, progress=not args.no_progress, faults=faults)
        if args.apply:
            name = apply_best(Path(settings.best_params))
            print(name)  # noqa: T201 - machine-readable: the experiment's name

    run_cli(_main)


if __name__ == "__main__":
    main()
