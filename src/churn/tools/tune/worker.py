"""One worker: join the study's run, run trials until its target, summarise when last out."""

from __future__ import annotations

import logging
import time
from typing import Any

from churn.config import Params
from churn.errors import ChurnError
from churn.tools.settings import TuneSettings
from churn.tools.tune.apply import override_text
from churn.tools.tune.mlflow_runs import TrialLogger, study_parent
from churn.tools.tune.objective import load_inputs, make_objective
from churn.tools.tune.results import finish_study, keep_best
from churn.tools.tune.search import direction
from churn.tools.tune.storage import Faults, check_storage, fail_stale, is_grpc, open_storage, storage_lock
from churn.tools.tune.study import (
    FINISHED,
    StaleTrials,
    join_run,
    load_or_create_study,
    study_fingerprint,
    tally,
    worker_id,
)

log = logging.getLogger(__name__)

SETTLE_POLL_S = 1.0  # how often a worker that is done looks at the trials others are still running


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
    if keep_best(record, settings) is None:
        return None
    shown = ", ".join(f"{k}={override_text(v)}" for k, v in record["params"].items())
    log.info("best: trial %d, cv %s %.6f with %s", record["trial"], settings.metric, record["value"], shown)
    return record


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
