"""The same dvc.lock from any x86-64 CPU: every stage output is the same bytes whichever kernel OpenBLAS would
pick for the CPU, for every model family.

OpenBLAS (inside numpy and scipy) picks its kernel per CPU at load time unless OPENBLAS_CORETYPE names one,
and logistic regression's coefficients follow the kernel in their last bits. bin/py pins the kernel for the
stages, overriding whatever the environment says. Another CPU is simulated by OPENBLAS_CORETYPE set to each
kernel this CPU can run (it is what OpenBLAS would choose on that CPU): with the stages' own settings in
force, all of them must give the outputs of the default run. The control run moves the pin itself
(CHURN_OPENBLAS_CORETYPE) and shows that the kernel does change the bytes, so the test can fail.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import yaml

from tests.conftest import project_env, require
from tests.integration.helpers import DVC, PYTHON, make_repo, run

pytestmark = pytest.mark.slow

KERNELS = ("Prescott", "Nehalem", "Haswell", "SkylakeX", "Zen")
FAMILIES = ("logistic_regression", "random_forest", "xgboost")
# What each kernel needs from the CPU, as Linux spells it in /proc/cpuinfo (SSE3 is `pni`, Prescott New
# Instructions); a kernel the CPU cannot run is not tried.
NEEDS = {"Prescott": {"pni"}, "Nehalem": {"sse4_2"}, "Haswell": {"avx2", "fma"}, "SkylakeX": {"avx512f"},
         "Zen": {"avx2", "fma"}}  # fmt: skip
ROWS = 20000  # the default sample's size: where the kernels' last bits are known to differ


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


def supported_kernels() -> list[str]:
    flags = cpu_flags()
    return [k for k in KERNELS if NEEDS[k] <= flags]


def lock_outs(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def repro(root: Path, **env: str) -> dict[str, str]:
    run([*DVC, "repro", "-f"], root, project_env(**env), timeout=900)
    return lock_outs(root)


def require_x86_64() -> None:
    require(platform.machine() in ("x86_64", "AMD64"), "an x86-64 CPU: the OpenBLAS kernels compared are x86-64's")


def test_every_x86_64_cpu_runs_the_prescott_kernel():
    """SSE3 (Prescott) is in every x86-64 CPU OpenBLAS supports: a flag lookup that misses it spells it wrong."""
    require_x86_64()
    assert "Prescott" in supported_kernels(), sorted(cpu_flags())


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    require_x86_64()
    root = make_repo(tmp_path_factory.mktemp("cross-cpu") / "repo", rows=ROWS)
    run([PYTHON, "-m", "churn.tools.store", "init"], root)
    return root


def set_family(root: Path, family: str) -> None:
    params = root / "params.yaml"
    settings = yaml.safe_load(params.read_text())
    settings["model"]["type"] = family
    params.write_text(yaml.safe_dump(settings, sort_keys=False))


def kernels_for(family: str) -> list[str]:
    """Every kernel this CPU runs for logistic regression, whose coefficients follow OpenBLAS's kernel; one other
    than the pinned Haswell for the tree families, which use no BLAS (a check that this stays so)."""
    kernels = supported_kernels()
    if family == "logistic_regression":
        return kernels
    return [next(k for k in kernels if k != "Haswell")]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_gives_the_same_outputs(repo, family):
    set_family(repo, family)
    expected = repro(repo)
    assert len(expected) >= 18  # every stage's outputs, metrics and plots included
    for kernel in kernels_for(family):
        assert repro(repo, OPENBLAS_CORETYPE=kernel) == expected, f"{family}: outputs differ under {kernel}"


def test_the_kernel_does_change_the_bytes_when_not_pinned(repo):
    """Control: moving the pin itself (as a CPU without the pin would) changes logistic regression's model."""
    kernels = supported_kernels()
    require(
        {"Haswell", "SkylakeX"} <= set(kernels) or {"Haswell", "Prescott"} <= set(kernels),
        f"a CPU that runs the Haswell kernel and Prescott or SkylakeX (this one runs {kernels})",
    )
    set_family(repo, "logistic_regression")
    models = {k: repro(repo, CHURN_OPENBLAS_CORETYPE=k)["models/model.pkl"] for k in kernels}
    assert len(set(models.values())) > 1, f"every kernel gave the same model: {models}"


def test_a_cpu_without_the_pinned_kernel_gets_one_line(repo, tmp_path):
    """bin/py refuses, in one line, a kernel the CPU cannot run, instead of crashing on an illegal
    instruction; simulated with a cpuinfo without AVX2 by running bin/py's check on a fake /proc."""
    script = (repo / "bin" / "py").read_text().replace("/proc/cpuinfo", str(tmp_path / "cpuinfo"))
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2\n")
    fake = tmp_path / "py"
    fake.write_text(script)
    result = run(["sh", str(fake), "-c", "print('ran')"], repo, project_env(), check=False)
    assert result.returncode == 1 and "ran" not in result.stdout
    assert result.stderr.count("\n") == 1 and "AVX2" in result.stderr and "CHURN_OPENBLAS_CORETYPE" in result.stderr
