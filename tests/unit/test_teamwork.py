"""Teamwork's configuration, checked offline: the DVC artifacts in dvc.yaml agree with the code, the git hooks
are local and match `make lint` and DVC's own hooks, the pull-request workflow is valid, and the registry gate
explains a serving failure in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from churn.storage import paths
from churn.tools.artifact import artifact_version, git_tag_name
from churn.tracking.models import MODEL_ARTIFACT, MODEL_ARTIFACT_FILE, MODEL_ARTIFACT_PATH
from tests.conftest import REPO

BIN = Path(sys.executable).parent
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
HOOKS = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
WORKFLOW = REPO / ".github" / "workflows" / "review.yml"


# --- DVC artifacts -----------------------------------------------------------------------------------


def test_the_model_artifact_is_what_the_stages_write():
    model = DVC_YAML["artifacts"][MODEL_ARTIFACT]
    assert model["type"] == "model" and model["labels"]
    assert model["path"] == MODEL_ARTIFACT_PATH
    assert str(paths.MODEL) == MODEL_ARTIFACT_FILE
    assert paths.MODEL.parent == paths.PREPROCESSOR.parent == Path(MODEL_ARTIFACT_PATH)
    # the description names the registry entry (interpolated from params, as DVC does)
    assert "${register.model_name}" in model["desc"] and "vN.0.0" in model["desc"]


def test_the_raw_data_artifact_follows_params():
    raw = DVC_YAML["artifacts"]["raw-data"]
    assert (raw["path"], raw["type"]) == ("${data.raw_path}", "dataset")
    assert raw["desc"] and raw["labels"]


def test_artifact_names_and_versions_are_what_dvc_artifacts_get_reads():
    from gto.constants import assert_name_is_valid
    from gto.tag import parse_name

    for name in DVC_YAML["artifacts"]:
        assert_name_is_valid(name)
    assert artifact_version("3") == "v3.0.0"
    parsed = parse_name(git_tag_name("12"))
    assert (parsed["name"], parsed["version"]) == (MODEL_ARTIFACT, "v12.0.0")


# --- git hooks -----------------------------------------------------------------------------------------


def _hooks() -> dict[str, dict]:
    return {hook["id"]: hook for repo in HOOKS["repos"] for hook in repo["hooks"]}


def test_every_hook_is_local_and_runs_the_project_tools():
    assert {repo["repo"] for repo in HOOKS["repos"]} == {"local"}
    tools = {".venv/bin/ruff": BIN / "ruff", "bin/dvc": REPO / "bin" / "dvc"}
    for hook in _hooks().values():
        assert hook["language"] == "system"
        assert tools[hook["entry"].split()[0]].exists(), hook


def test_dvc_hooks_are_those_dvc_install_use_pre_commit_tool_writes(tmp_path):
    """The same ids, stages and always_run as DVC's own entry, but run by bin/dvc (`dvc git-hook <hook>`)."""
    from types import SimpleNamespace

    from dvc.repo.install import pre_commit_install

    pre_commit_install(SimpleNamespace(root_dir=str(tmp_path)))
    (theirs,) = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text())["repos"]
    ours = _hooks()
    for hook in theirs["hooks"]:
        mine = ours[hook["id"]]
        assert mine["stages"] == hook["stages"]
        assert mine.get("always_run", False) == hook.get("always_run", False)
        assert mine["entry"] == f"bin/dvc git-hook {hook['id'].removeprefix('dvc-')}"
    assert set(HOOKS["default_install_hook_types"]) == {s for h in theirs["hooks"] for s in h["stages"]}


def test_ruff_hooks_run_what_make_lint_runs():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    commands = [line.strip().replace("$(BIN)", ".venv/bin") for line in recipe.splitlines()]
    hooks = _hooks()
    for command, hook_id in zip(commands, ("ruff-check", "ruff-format"), strict=True):
        assert command.endswith(" src tests bench"), command
        assert hooks[hook_id]["entry"] == f"{command.removesuffix(' src tests bench')} --force-exclude"
        assert hooks[hook_id]["files"] == "^(src|tests|bench)/"
        assert hooks[hook_id]["stages"] == ["pre-commit"]


def test_pre_commit_accepts_the_config():
    result = subprocess.run(
        [str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the pull-request workflow -------------------------------------------------------------------------


def test_the_review_workflow_is_a_valid_github_workflow():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_review_workflow_builds_and_posts_the_report_on_pull_requests():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # PyYAML reads the key `on` as True
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(s.startswith("make run") for s in steps)
    assert any(s.startswith("make report BASE=") for s in steps)
    assert any("reports/review.md" in s and s.startswith("cml comment") for s in steps)
    assert workflow["permissions"]["pull-requests"] == "write"


# --- the gate explains a serving failure ---------------------------------------------------------------


def test_failures_name_each_serving_check_that_failed():
    from churn.tracking.registry import failures

    decision = {
        "passed": False,
        "checks": {"roc_auc": {"value": 0.8, "min": 0.7, "passed": True}},
        "serving": {
            "passed": False,
            "checks": {
                "serving_example": {"passed": False, "error": "columns are missing: {'gender'}"},
                "test_rows": {"passed": True, "rows": 5},
            },
        },
    }
    assert failures(decision) == ["serving serving_example: columns are missing: {'gender'}"]
    assert failures({"passed": True, "checks": {}}) == []


# --- the review's base revision ------------------------------------------------------------------------


@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q", "-b", "work")
    (tmp_path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "a")
    git("update-ref", "refs/remotes/origin/trunk", "HEAD")  # a CI checkout: the base only as origin/<base>
    monkeypatch.chdir(tmp_path)
    return git


def test_review_base_falls_back_to_origin(git_repo):
    from churn.errors import ChurnError
    from churn.tools.review import resolve_base

    head = git_repo("rev-parse", "HEAD")
    assert resolve_base("work") == ("work", head)
    assert resolve_base("trunk") == ("origin/trunk", head)
    with pytest.raises(ChurnError, match=r"^base revision 'nope' not found \(nor origin/nope\)"):
        resolve_base("nope")
