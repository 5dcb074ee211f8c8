"""Queue the model families' grids from params `sweep` as DVC experiments, and optionally run the queue.

    python -m churn.tools.sweep [--family xgboost ...] [--run] [--jobs 2]

Each family becomes one `dvc exp run --queue` with `-S model.type=<family>` and one comma-separated `-S`
per grid key (DVC expands them into the cross product). The tracking URI in force now is stamped into every
queued experiment (`-S mlflow.tracking_uri=...`): queue workers keep the environment of the shell that first
started them, so without the stamp an idle worker could send later experiments to an old store.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from churn.config import Params
from churn.errors import ChurnError
from churn.tools.experiments import dvc
from churn.tools.settings import SweepSettings

log = logging.getLogger(__name__)
ACTIVE = re.compile(r"\b(Queued|Running)\b")
QUEUE_LOG = Path(".dvc") / "tmp" / "queue-start.log"
ORPHANED_LIMIT_S = 60.0


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def family_overrides(family: str, grid: dict[str, list], tracking_uri: str) -> list[str]:
    """The `-S` arguments that queue one family's grid."""
    prefix = "model." if family == "logistic_regression" else f"model.{family}."
    args = ["-S", f"model.type={family}", "-S", f"mlflow.tracking_uri={tracking_uri}"]
    for key, values in grid.items():
        args += ["-S", f"{prefix}{key}={','.join(_yaml_value(v) for v in values)}"]
    return args


def queue(params: Params, sweep: SweepSettings, families: list[str]) -> None:
    from churn.tracking.store import connect, tracking_uri

    uri = tracking_uri(configured=params.mlflow.tracking_uri)
    connect(params.mlflow.experiment, uri)  # create the store now, before parallel workers exist
    for family in families:
        grids = sweep.grids()
        if family not in grids:
            raise ChurnError(f"params.yaml: sweep.{family} is not defined (have: {', '.join(grids)})")
        out = dvc("exp", "run", "--queue", *family_overrides(family, grids[family], uri))
        count = out.count("Queued experiment")
        log.info("queued %d %s experiments", count, family)


def wait_for_queue(poll_s: float = 5.0, starter: subprocess.Popen | None = None, cwd: Path | None = None) -> str:
    """Block until no experiment is queued or running; returns the final `dvc queue status`.

    With `starter` (the `dvc queue start` process), a start that failed, or workers that are all gone while
    experiments are still queued, end the wait with a ChurnError instead of waiting for ever."""
    orphaned_since: float | None = None
    while True:
        status = dvc("queue", "status", cwd=cwd)
        tasks, _, workers = status.partition("Worker status")
        if not ACTIVE.search(tasks):
            return status
        if starter is not None and starter.poll() not in (None, 0):
            raise ChurnError(f"dvc queue start exited {starter.returncode}; see {QUEUE_LOG}")
        orphaned = starter is not None and starter.poll() is not None and "0 active" in workers
        orphaned_since = (orphaned_since or time.monotonic()) if orphaned else None
        if orphaned_since is not None and time.monotonic() - orphaned_since > ORPHANED_LIMIT_S:
            raise ChurnError(f"experiments are queued but no DVC queue worker is left; see {QUEUE_LOG}")
        time.sleep(poll_s)


def run_queue(jobs: int, poll_s: float = 2.0, grace_s: float = 30.0, cwd: Path | None = None) -> str:
    """`dvc queue start --jobs N`, wait until every queued experiment has run, return the final status.

    `dvc queue start` returns when its workers exit, about 10 s after the queue empties. Two workers that
    empty it at the same moment can lose one's shutdown message in DVC's file-based broker (seen with
    DVC 3.67): that worker then never exits, and neither does `dvc queue start`. So the start's output goes
    to a file rather than a pipe, and once nothing is queued or running, a worker still there after
    `grace_s` is terminated (it has nothing left to do)."""
    log_path = (cwd or Path(".")) / QUEUE_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as output:
        starter = subprocess.Popen(
            [sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        status = wait_for_queue(poll_s, starter, cwd)
        starter.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _end_stuck_workers(starter)
    except BaseException:
        _end_stuck_workers(starter)
        raise
    return status


def _end_stuck_workers(starter: subprocess.Popen) -> None:
    import psutil

    try:
        workers = psutil.Process(starter.pid).children(recursive=True)
    except psutil.Error:
        workers = []
    for proc in [*workers, starter]:
        with contextlib.suppress(psutil.Error, OSError):
            log.warning("stopping DVC queue process %d, still running with nothing left to do", proc.pid)
            proc.terminate()
    _, alive = psutil.wait_procs([p for p in workers if isinstance(p, psutil.Process)], timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        starter.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.tools.settings import load, sweep_settings

    parser = argparse.ArgumentParser(prog="python -m churn.tools.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", help="only this family (repeatable); default: all")
    parser.add_argument("--run", action="store_true", help="start the queue and wait for it to finish")
    parser.add_argument("--jobs", type=int, default=2, help="parallel queue workers (with --run)")
    args = parser.parse_args(argv)

    def _main() -> None:
        params, raw = load()
        sweep = sweep_settings(raw)
        queue(params, sweep, args.family or list(sweep.grids()))
        if args.run:
            status = run_queue(args.jobs)
            log.info("queue finished:\n%s", status.strip())
            if "Failed" in status:
                raise ChurnError("some experiments failed; see `dvc queue logs <name>`")

    run_cli(_main)


if __name__ == "__main__":
    main()
