"""Queue the model families' grids from params `sweep` as DVC experiments, and optionally run the queue.

    python -m churn.sweep [--family xgboost ...] [--run] [--jobs 2]

Each family becomes one `dvc exp run --queue` with `-S model.type=<family>` and one comma-separated `-S`
per grid key (DVC expands them into the cross product). The tracking URI in force now is stamped into every
queued experiment (`-S mlflow.tracking_uri=...`): queue workers keep the environment of the shell that first
started them, so without the stamp an idle worker could send later experiments to an old store.
"""

from __future__ import annotations

import argparse
import logging
import re
import time

from churn.errors import ChurnError
from churn.experiments import dvc
from churn.params import Params

log = logging.getLogger(__name__)
ACTIVE = re.compile(r"\b(Queued|Running)\b")


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


def queue(params: Params, families: list[str]) -> None:
    from churn.tracking import connect, tracking_uri

    uri = tracking_uri(configured=params.mlflow.tracking_uri)
    connect(params.mlflow.experiment, uri)  # create the store now, before parallel workers exist
    for family in families:
        if family not in params.sweep:
            raise ChurnError(f"params.yaml: sweep.{family} is not defined (have: {', '.join(params.sweep)})")
        out = dvc("exp", "run", "--queue", *family_overrides(family, params.sweep[family], uri))
        count = out.count("Queued experiment")
        log.info("queued %d %s experiments", count, family)


def wait_for_queue(poll_s: float = 5.0) -> str:
    """Block until no experiment is queued or running; returns the final `dvc queue status`."""
    while True:
        status = dvc("queue", "status")
        if not ACTIVE.search(status.split("Worker status")[0]):
            return status
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.params import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", help="only this family (repeatable); default: all")
    parser.add_argument("--run", action="store_true", help="start the queue and wait for it to finish")
    parser.add_argument("--jobs", type=int, default=2, help="parallel queue workers (with --run)")
    args = parser.parse_args(argv)

    def _main() -> None:
        params = load_params()
        queue(params, args.family or list(params.sweep))
        if args.run:
            dvc("queue", "start", "--jobs", str(args.jobs))
            status = wait_for_queue()
            log.info("queue finished:\n%s", status.strip())
            if "Failed" in status:
                raise ChurnError("some experiments failed; see `dvc queue logs <name>`")

    run_cli(_main)


if __name__ == "__main__":
    main()
