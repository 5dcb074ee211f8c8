"""The one wrapper every entry point runs under: logging set up once, user errors as one line."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is, as Ctrl-C raises KeyboardInterrupt: `finally` blocks
    and context managers run, so a stage's MLflow run ends KILLED instead of staying RUNNING for ever."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    for name in ("SIGTERM", "SIGHUP"):  # a second signal must not cut the clean-up short (SIGKILL still can)
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Terminated(signum)


def handle_termination() -> None:
    """Turn SIGTERM and SIGHUP (a `kill`, a closed terminal, a stopped job) into Terminated."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            with contextlib.suppress(ValueError):  # not the main thread: leave the defaults
                signal.signal(getattr(signal, name), _terminate)


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(line, file=sys.stderr)  # noqa: T201 - the one line the user reads


def run_cli(main: Callable[[], object]) -> None:
    """Run `main`; a ChurnError ends the process with one line on stderr and exit code 1; SIGINT, SIGTERM
    and SIGHUP end it with one line and 128 + the signal's number."""
    configure_logging()
    handle_termination()
    try:
        main()
    except ChurnError as exc:
        _say(f"error: {exc}")
        sys.exit(1)
    except Terminated as exc:
        _say(f"error: {exc}")
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:
        _say("error: interrupted")
        sys.exit(130)
