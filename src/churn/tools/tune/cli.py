"""The command: `python -m churn.tools.tune` (and `make tune`)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from churn.config import MODEL_TYPES
from churn.tools.tune import __doc__ as ABOUT
from churn.tools.tune.apply import apply_best
from churn.tools.tune.local_workers import run_workers
from churn.tools.tune.results import best_of
from churn.tools.tune.search import resolve
from churn.tools.tune.storage import Faults
from churn.tools.tune.worker import tune


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
    parser = argparse.ArgumentParser(prog="python -m churn.tools.tune", description=ABOUT.splitlines()[0])
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
