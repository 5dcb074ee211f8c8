"""Local workers: N processes of this tool on one study, on a database server."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

from churn.errors import ChurnError
from churn.tools.settings import TuneSettings
from churn.tools.tune.storage import Faults, check_storage, is_shared

log = logging.getLogger(__name__)


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
