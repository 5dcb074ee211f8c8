"""The README's promise: `make run` on a fresh clone works, prints the test ROC AUC, and leaves git clean.

This clones the repository's committed HEAD (uncommitted work is not part of a clone), so it checks exactly
what a user gets. It builds its own .venv (fast when the package cache is warm, as it is after `make test`'s
own setup).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, project_env
from tests.integration.helpers import mlflow_runs, parents_and_children, run
from tests.integration.test_cross_cpu import cpu_flags

pytestmark = pytest.mark.slow


def fresh_shell_env() -> dict[str, str]:
    """An environment like a new terminal's: no virtualenv active, this test's venv off PATH."""
    env = project_env()
    env.pop("VIRTUAL_ENV", None)
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != ours)
    return env


def test_make_run_on_a_fresh_clone_then_an_experiment(tmp_path):
    clone = tmp_path / "x"
    env = fresh_shell_env()
    run(["git", "clone", "-q", str(REPO), str(clone)], tmp_path, env)

    result = run(["make", "run"], clone, env, timeout=1200)
    assert "roc_auc" in result.stdout + result.stderr
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""

    again = run(["make", "run"], clone, env)
    assert "up to date" in again.stdout  # idempotent: a second run only finds the pipeline up to date

    # Exactly as the README says, without activating anything.
    run(["bin/dvc", "exp", "run", "-S", "model.C=0.1"], clone, env)
    shown = run(["bin/dvc", "exp", "show", "--no-pager", "--csv"], clone, env).stdout
    assert "0.1" in shown
    parents, children = parents_and_children(mlflow_runs(clone))
    named = [p for p in parents if p.data.tags.get("dvc.exp_name")]
    assert len(named) == 1 and named[0].data.tags["dvc.exp_name"] in shown
    assert {c.data.tags["dvc.stage"] for c in children[named[0].info.run_id]} == {"train", "evaluate", "register"}


def test_make_run_on_a_fresh_clone_as_another_cpu_would(tmp_path):
    """A CPU where OpenBLAS would pick another kernel (simulated by OPENBLAS_CORETYPE, which is what OpenBLAS
    reads) gets the committed dvc.lock too: the stages pin their own kernel."""
    clone = tmp_path / "x"
    env = {**fresh_shell_env(), "OPENBLAS_CORETYPE": "SkylakeX" if "avx512f" in cpu_flags() else "Prescott"}
    run(["git", "clone", "-q", str(REPO), str(clone)], tmp_path, env)
    run(["make", "run"], clone, env, timeout=1200)
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""
