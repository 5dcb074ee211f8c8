"""The git hooks of .pre-commit-config.yaml, installed by `make hooks` and run by git, offline.

ruff refuses a commit with a lint error; `dvc status` runs before every commit; `git checkout` brings back the
data of the commit checked out (`dvc checkout`); `git push` first sends the data to the DVC remote (`dvc push`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, project_env
from tests.integration.helpers import DVC, run

pytestmark = pytest.mark.slow

RAW = "data/raw/customers.csv"


def dvc_md5(root: Path) -> str:
    return yaml.safe_load((root / f"{RAW}.dvc").read_text())["outs"][0]["md5"]


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """A clone with its hooks installed; each step's outcome is kept for the tests below."""
    base = tmp_path_factory.mktemp("hooks")
    root = copy_project(base / "repo")
    # Only a DVC-tracked file, no pipeline: `dvc checkout` after `git checkout` needs every output of the
    # commit in the cache, and this test never runs the stages.
    (root / "dvc.yaml").unlink()
    for name in (".pre-commit-config.yaml", "Makefile", "requirements.txt"):
        shutil.copy2(REPO / name, root / name)
    env = project_env(PRE_COMMIT_HOME=str(base / "pre-commit-home"))
    run(["git", "init", "-q", "-b", "main"], root, env)
    (root / ".venv").symlink_to(REPO / ".venv")
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    run([*DVC, "init", "-q"], root, env)
    run([*DVC, "config", "core.analytics", "false"], root, env)
    run([*DVC, "remote", "add", "-d", "local", "../dvc-storage"], root, env)
    (root / RAW).parent.mkdir(parents=True, exist_ok=True)
    (root / RAW).write_text("customer_id,churn\n1,0\n")
    run([*DVC, "add", "-q", RAW], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "project"], root, env)
    seen: dict = {"root": root, "env": env, "v1": dvc_md5(root)}

    seen["install"] = run(["make", "-o", ".venv/.installed", "hooks"], root, env).stdout

    bad = root / "src" / "churn" / "scratch.py"
    bad.write_text("import os\n")
    run(["git", "add", str(bad)], root, env)
    seen["refused"] = run(["git", "commit", "-m", "scratch"], root, env, check=False)
    bad.write_text('"""Scratch."""\n')
    run(["git", "add", str(bad)], root, env)
    seen["accepted"] = run(["git", "commit", "-m", "scratch"], root, env)

    (root / RAW).write_text("customer_id,churn\n1,0\n2,1\n")
    run([*DVC, "add", "-q", RAW], root, env)
    run(["git", "add", f"{RAW}.dvc"], root, env)
    run(["git", "commit", "-q", "-m", "more customers"], root, env)
    seen["v2"] = dvc_md5(root)
    run(["git", "checkout", "-q", "HEAD~1"], root, env)
    seen["raw_after_checkout"] = (root / RAW).read_text()
    run(["git", "checkout", "-q", "main"], root, env)
    seen["raw_back_on_main"] = (root / RAW).read_text()

    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base, env)
    run(["git", "remote", "add", "origin", str(origin)], root, env)
    seen["push"] = run(["git", "push", "-u", "origin", "main"], root, env)
    seen["storage"] = base / "dvc-storage"
    return seen


def test_make_hooks_installs_the_three_hook_types(hooked):
    for hook in ("pre-commit", "pre-push", "post-checkout"):
        assert f"pre-commit installed at .git/hooks/{hook}" in hooked["install"]
        assert (hooked["root"] / ".git" / "hooks" / hook).is_file()


def test_a_lint_error_stops_the_commit(hooked):
    result = hooked["refused"]
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ruff check" in out and "Failed" in out and "F401" in out, out


def test_a_clean_commit_runs_ruff_and_dvc_status(hooked):
    out = hooked["accepted"].stdout + hooked["accepted"].stderr
    for name in ("ruff check", "ruff format --check", "DVC pre commit (dvc status)"):
        assert any(line.startswith(name) and line.endswith("Passed") for line in out.splitlines()), out


def test_checkout_brings_the_data_of_that_commit_back(hooked):
    assert hooked["raw_after_checkout"] == "customer_id,churn\n1,0\n"
    assert hooked["raw_back_on_main"] == "customer_id,churn\n1,0\n2,1\n"


def test_push_sends_the_data_to_the_dvc_remote_first(hooked):
    out = hooked["push"].stdout + hooked["push"].stderr
    assert "DVC pre push (dvc push)" in out, out
    v2 = hooked["v2"]
    assert (hooked["storage"] / "files" / "md5" / v2[:2] / v2[2:]).is_file()
