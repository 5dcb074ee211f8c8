"""The one wrapper every entry point runs under: logging set up once, user errors as one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from churn.errors import ChurnError

log = logging.getLogger("churn")


def configure_logging() -> None:
    level = os.environ.get("CHURN_LOG_LEVEL", "INFO").upper()
    # MLflow sets its own logger's level when imported (later, lazily); this is the setting it reads.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow 3 reports usage to its maintainers over the network unless told not to; a pipeline run talks
    # to nothing but its store. MLFLOW_DISABLE_TELEMETRY=false in the environment opts back in.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # MLflow and friends are chatty at INFO; keep their warnings.
    for name in ("mlflow", "alembic", "urllib3", "git", "matplotlib", "numexpr"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def run_cli(main: Callable[[], object]) -> None:
    """Run `main`; a ChurnError ends the process with one line on stderr and exit code 1."""
    configure_logging()
    try:
        main()
    except ChurnError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the one line the user reads
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)  # noqa: T201
        sys.exit(130)
