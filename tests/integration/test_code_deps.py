"""DVC's own view of the code deps, on a real pipeline: editing a file re-runs exactly the stages that import
it (`dvc status` names them), and editing a tool re-runs nothing, nor does a params block only tools read (its
settings code included): a bad `tune.space` fails `churn.tools.tune` in one line, never a stage. The static
check is tests/unit/test_dvc_yaml.py; this shows what a user sees."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.helpers import DVC, PYTHON, make_repo, reproduce, run
from tests.unit.test_dvc_yaml import STAGES, static_imports

pytestmark = pytest.mark.slow

EDITED = (
    "src/churn/config.py",
    "src/churn/core/features.py",
    "src/churn/storage/outputs.py",
    "src/churn/storage/csv_reader.py",  # prepare reads the raw table with it; predict, serve and datablock too
    "src/churn/pipeline/train.py",
    "src/churn/tracking/registry.py",
    "src/churn/tools/compare.py",
    "src/churn/tools/predict.py",
    "src/churn/tools/settings.py",  # the tune, sweep, compare and generate blocks' models
    "src/churn/tools/versions.py",  # registry promotion, rollback and tables
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("deps") / "repo", rows=400)
    reproduce(root)
    return root


@pytest.mark.parametrize("path", EDITED)
def test_a_comment_changes_exactly_the_stages_that_import_the_file(repo, path):
    importers = {stage for stage in STAGES if path in static_imports(f"churn.pipeline.{stage}")}
    if path.startswith("src/churn/tools/"):
        assert importers == set()
    else:
        assert importers, f"no stage imports {path}"
    with (repo / path).open("a") as handle:
        handle.write("# a comment\n")
    try:
        status = json.loads(run([*DVC, "status", "--json"], repo).stdout or "{}")
    finally:
        run(["git", "checkout", "--", path], repo)
    assert set(status) == importers
    assert json.loads(run([*DVC, "status", "--json"], repo).stdout or "{}") == {}


def status(repo) -> dict:
    return json.loads(run([*DVC, "status", "--json"], repo).stdout or "{}")


def edit_params(repo, changes: dict[str, object]) -> None:
    """Set dotted keys of the repository's params.yaml."""
    path = repo / "params.yaml"
    settings = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = settings
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


def test_editing_the_blocks_only_tools_read_reruns_nothing(repo):
    edit_params(
        repo,
        {
            "tune.n_trials": 3,
            "tune.space.logistic_regression.C": {"low": 0.01, "high": 10, "log": True},
            "sweep.logistic_regression.C": [0.5, 5],
            "compare.curves": 2,
            "generate.rows": 123,
        },
    )
    try:
        assert status(repo) == {}
    finally:
        run(["git", "checkout", "--", "params.yaml"], repo)


def test_a_bad_search_space_fails_tune_in_one_line_and_no_stage(repo):
    edit_params(repo, {"tune.space.logistic_regression.C": {"low": 100, "high": 0.001}})
    try:
        assert status(repo) == {}
        run([*DVC, "repro", "-f", "prepare"], repo)  # the stages do not read the tune block
        tune = run([PYTHON, "-m", "churn.tools.tune", "--no-progress", "--trials", "1"], repo, check=False)
    finally:
        run(["git", "checkout", "--", "params.yaml"], repo)
    assert tune.returncode == 1
    assert "Traceback" not in tune.stderr
    errors = [line for line in tune.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: params.yaml: tune.space.logistic_regression.C must be a range with low < high, "
        "got {'low': 100, 'high': 0.001}"
    ], tune.stderr
    assert status(repo) == {}  # prepare, forced, wrote what it had written
