"""The README's promise: `make run` on a fresh clone works, prints the test ROC AUC, and leaves git clean.

This clones the repository's committed HEAD (uncommitted work is not part of a clone), so it checks exactly
what a user gets. It builds its own .venv once (fast when the package cache is warm, as it is after `make
test`'s own setup), shared by both tests.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
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


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """One clone, its .venv built and `make run` done once, shared by the tests below: (clone, env, output)."""
    base = tmp_path_factory.mktemp("fresh-clone")
    clone = base / "x"
    env = fresh_shell_env()
    run(["git", "clone", "-q", str(REPO), str(clone)], base, env)
    result = run(["make", "run"], clone, env, timeout=1200)
    return clone, env, result.stdout + result.stderr


def test_make_run_on_a_fresh_clone_then_an_experiment(fresh_clone):
    clone, env, output = fresh_clone
    assert "roc_auc" in output
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


def test_make_run_on_a_fresh_clone_as_another_cpu_would(fresh_clone):
    """A CPU where OpenBLAS would pick another kernel (simulated by OPENBLAS_CORETYPE, which is what OpenBLAS
    reads) gets the committed dvc.lock too: the stages pin their own kernel. The clone's committed state (an
    experiment may be applied), then every stage run again under that kernel (-f: not restored from DVC's
    run-cache), by a warm stage server of its own started in this environment (not one the first run left)."""
    clone, env, _ = fresh_clone
    warm = tempfile.mkdtemp(prefix="warmfork-cpu-")  # mode 0700, as WARMFORK_DIR must be
    env = {**env, "OPENBLAS_CORETYPE": "SkylakeX" if "avx512f" in cpu_flags() else "Prescott", "WARMFORK_DIR": warm}
    try:
        run(["git", "checkout", "--", "."], clone, env)
        run(["bin/dvc", "repro", "-f"], clone, env, timeout=1200)
        assert run(["git", "status", "--porcelain"], clone, env).stdout == ""
    finally:
        run(["bin/py", "-m", "warmfork", "--stop", "--all"], clone, env, check=False)
        shutil.rmtree(warm, ignore_errors=True)
