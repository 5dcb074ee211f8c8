"""The five DVC stages, one module each: prepare, featurize, train, evaluate, register.

Each `main()` reads params.yaml, reads its inputs, calls library functions, stages its outputs, logs to
MLflow, and publishes the outputs only once everything succeeded.
"""

from __future__ import annotations

from collections.abc import Callable

from churn.config import Params


def entry(run: Callable[[Params], None]) -> None:
    """Run a stage function under the CLI wrapper (one-line errors, logging) with the validated params."""
    import sys
    from pathlib import Path

    from churn.cli import run_cli
    from churn.config import load_params
    from churn.timing import stage_timings

    with stage_timings(Path(sys.modules[run.__module__].__file__).stem):
        run_cli(lambda: run(load_params()))
