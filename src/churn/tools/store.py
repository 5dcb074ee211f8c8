"""The MLflow store from the command line: `init` (create it once, before anything runs in parallel),
`summary` (what `make run` prints at the end), `uri` (the resolved store, for the Makefile).

`init` also clears what a killed run leaves behind, each with one line when it finds something: an empty
dvc.lock (restored from git) or a cut-short one (an error saying how to recover), runs still RUNNING whose
process is gone (ended KILLED), and stage staging folders of processes that are gone (removed).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from churn.tracking.store import connect, is_local_store, redact, tracking_uri

if TYPE_CHECKING:
    from churn.config import MlflowParams

log = logging.getLogger(__name__)

# --- command line: make run's setup and summary ------------------------------------------------


def _init(settings: MlflowParams) -> None:
    from churn.system import check_dvc_lock, remove_stale_dirs
    from churn.tracking.runs import end_dead_runs

    check_dvc_lock()
    store = connect(settings.experiment, settings.tracking_uri)
    log.info(
        "MLflow store ready: %s (experiment %r, id %s)", redact(store.uri), settings.experiment, store.experiment_id
    )
    end_dead_runs(store)
    for leftover in remove_stale_dirs(".staging-*-*"):
        log.info("removed %s, left by a stage that was killed", leftover)


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
    lines.append("  Compare:      bin/dvc metrics show   |   bin/dvc exp show")
    print("\n".join(lines))  # noqa: T201 - the summary the user reads at the end of `make run`


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.config import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tools.store")
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
