"""DVC's own view of the code deps, on a real pipeline: editing a file re-runs exactly the stages that import
it (`dvc status` names them), and editing a tool re-runs nothing. The static check is
tests/unit/test_dvc_yaml.py; this shows what a user sees."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import DVC, make_repo, reproduce, run
from tests.unit.test_dvc_yaml import STAGES, static_imports

pytestmark = pytest.mark.slow

EDITED = (
    "src/churn/config.py",
    "src/churn/core/features.py",
    "src/churn/pipeline/files.py",
    "src/churn/pipeline/train.py",
    "src/churn/tracking/registry.py",
    "src/churn/tools/compare.py",
    "src/churn/tools/predict.py",
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
