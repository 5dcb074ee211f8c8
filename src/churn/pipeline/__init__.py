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

    def _run() -> None:
        check_blas_kernel()
        run(load_params())

    with stage_timings(Path(sys.modules[run.__module__].__file__).stem):
        run_cli(_run)


def check_blas_kernel() -> None:
    """bin/py pins OpenBLAS's kernel (OPENBLAS_CORETYPE) so that outputs are the same bytes on every x86-64
    CPU; fail in one line if the loaded library runs another one (it ignored or could not use the pin)."""
    import os

    from churn.errors import ChurnError

    wanted = os.environ.get("OPENBLAS_CORETYPE")
    if not wanted:
        return
    from threadpoolctl import threadpool_info

    loaded = {i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}
    if loaded and {a.lower() for a in loaded if a} != {wanted.lower()}:
        raise ChurnError(
            f"OpenBLAS runs kernel {', '.join(sorted(map(str, loaded)))}, not the pinned {wanted} "
            "(OPENBLAS_CORETYPE); outputs would differ from dvc.lock's. Run stages through bin/py (dvc repro)"
        )
