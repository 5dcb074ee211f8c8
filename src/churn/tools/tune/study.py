"""Study coordination: one study per data and CV settings, runs of it shared by workers, stale trials retried."""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from typing import Any, Protocol

from churn.config import Params
from churn.errors import ChurnError
from churn.tools.settings import TuneSettings
from churn.tools.tune.search import direction, seeded_tpe
from churn.tools.tune.storage import Faults, is_grpc

log = logging.getLogger(__name__)

# Metrics that depend on evaluate.threshold (the others are computed from probabilities alone).
THRESHOLD_METRICS = frozenset({"accuracy", "precision", "recall", "f1"})
# Study user attributes: what its scores depend on, its identity in MLflow, the current run, the last summary.
FINGERPRINT_ATTR = "churn"
UID_ATTR = "churn.uid"
RUN_ATTR = "churn.run"
SUMMARY_ATTR = "churn.summarised"
# Trial user attributes: the worker running it, and the trial's own number (a retry inherits the original's).
WORKER_ATTR = "worker"
ORIGIN_ATTR = "trial"
FINISHED = ("COMPLETE", "PRUNED")


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


class LostRuns(Protocol):
    """Where a lost trial's tracking run is ended (mlflow_runs.TrialLogger)."""

    def end_lost(self, number: int, error: str) -> None: ...


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
        self.tracker: LostRuns | None = None

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
