"""A reviewer's view: `make report` on a branch that changes model.C, and the model as a DVC artifact.

One repository: the pipeline runs and is committed on main (registry version 1); `make artifact` tags that
commit as artifact version v1.0.0 and writes it on the registry version; `dvc artifacts get` fetches the model
from another directory. Then a branch sets model.C, reproduces, and `make report` compares it with main.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from churn.system import file_md5
from tests.conftest import REPO
from tests.integration.helpers import DVC, make_repo, reproduce, run

pytestmark = pytest.mark.slow

MAKE = ["make", "-o", ".venv/.installed"]  # the symlinked .venv is set up; never reinstall into it
NEW_C = 0.05


def with_make(root: Path) -> None:
    """The Makefile, and .venv as in a clone after `make setup` (a symlink git is told to ignore)."""
    for name in ("Makefile", "requirements.txt"):
        (root / name).write_bytes((REPO / name).read_bytes())
    (root / ".venv").symlink_to(REPO / ".venv")
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")


def registry(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"  # registry too: an earlier test may have set MLflow's global one
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registry_version(root: Path, number: str = "1"):
    return registry(root).get_model_version("churn_model", number)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("review")
    root = make_repo(base / "repo", rows=300)
    with_make(root)
    reproduce(root)  # runs and commits on main: registry version 1, the champion
    seen: dict = {"root": root, "main": run(["git", "rev-parse", "HEAD"], root).stdout.strip()}

    # The model as a DVC artifact: tag the commit holding version 1, then fetch it from elsewhere.
    made = run([*MAKE, "artifact"], root)
    seen["artifact_log"] = made.stdout + made.stderr
    seen["tags"] = run(["git", "tag", "-l", "-n1"], root).stdout
    seen["wrong_rev"] = run([*MAKE, "artifact", "REV=HEAD~1"], root, check=False)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    seen["get"] = run([*DVC, "artifacts", "get", str(root), "churn-model"], elsewhere)
    seen["elsewhere"] = elsewhere

    # A branch that changes model.C, reproduced, and reviewed against main.
    run(["git", "checkout", "-q", "-b", "smaller-c"], root)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    settings["model"]["C"] = NEW_C
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    run([*DVC, "repro"], root)
    run(["git", "commit", "-q", "-am", f"model.C={NEW_C}"], root)
    seen["report_log"] = run([*MAKE, "report"], root)
    seen["report"] = (root / "reports" / "review.md").read_text()
    seen["unknown_base"] = run([*MAKE, "report", "BASE=no-such-branch"], root, check=False)
    return seen


def table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines() if "|" in line]
    return [row for row in rows if row and row[0] == first_cell]


# --- DVC artifacts -----------------------------------------------------------------------------------


def test_dvc_yaml_declares_the_model_and_the_raw_data_as_artifacts(project):
    from dvc.repo import Repo

    with Repo(str(project["root"])) as repo:
        artifacts = repo.artifacts.read()["dvc.yaml"]
    model, raw = artifacts["churn-model"], artifacts["raw-data"]
    assert (model.path, model.type) == ("models", "model")
    assert "models:/churn_model/N" in model.desc and "churn_model@champion" in model.desc
    assert model.labels and raw.labels
    assert (raw.path, raw.type) == ("data/raw/customers.csv", "dataset")


def test_make_artifact_tags_the_commit_holding_the_registered_model(project):
    assert re.search(r"^churn-model@v1\.0\.0\s+churn_model version 1 ", project["tags"], re.M), project["tags"]
    tagged = run(["git", "rev-parse", "churn-model@v1.0.0^{commit}"], project["root"]).stdout.strip()
    assert tagged == project["main"]
    assert "git push origin churn-model@v1.0.0" in project["artifact_log"]


def test_the_registry_version_names_the_artifact_its_path_and_git_rev(project):
    tags = registry_version(project["root"]).tags
    assert tags["dvc.artifact"] == "churn-model"
    assert tags["dvc.artifact.path"] == "models"
    assert tags["dvc.artifact.rev"] == project["main"]
    assert tags["dvc.artifact.version"] == "v1.0.0"
    assert tags["dvc.artifact.get"] == f"dvc artifacts get {project['root']} churn-model --rev v1.0.0"


def test_dvc_artifacts_get_fetches_the_registered_model_from_another_directory(project):
    assert "Downloaded" in project["get"].stdout + project["get"].stderr
    got = project["elsewhere"] / "models"
    tags = registry_version(project["root"]).tags
    assert file_md5(got / "model.pkl") == tags["dvc.artifact.md5"]
    lock = yaml.safe_load(run(["git", "show", f"{project['main']}:dvc.lock"], project["root"]).stdout)
    preprocessor = next(o for o in lock["stages"]["featurize"]["outs"] if o["path"] == "models/preprocessor.pkl")
    assert file_md5(got / "preprocessor.pkl") == preprocessor["md5"]


def test_the_command_on_the_registry_version_works_as_written(project, tmp_path):
    command = registry_version(project["root"]).tags["dvc.artifact.get"].split()
    assert command[:3] == ["dvc", "artifacts", "get"]
    run([*DVC, *command[1:], "-o", "fetched"], tmp_path)
    assert file_md5(tmp_path / "fetched" / "model.pkl") == registry_version(project["root"]).tags["dvc.artifact.md5"]


def test_a_commit_without_the_model_is_refused_in_one_line(project):
    result = project["wrong_rev"]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "does not hold this model" in lines[0], result.stderr


# --- the review report ---------------------------------------------------------------------------------


def test_report_lists_the_changed_param(project):
    assert table_rows(project["report"], "params.yaml") == [["params.yaml", "model.C", "0.5", str(NEW_C)]]


def test_report_lists_the_metrics_delta(project):
    main = json.loads(run(["git", "show", "main:reports/metrics.json"], project["root"]).stdout)
    branch = json.loads((project["root"] / "reports" / "metrics.json").read_text())
    rows = {row[1]: row for row in table_rows(project["report"], "reports/metrics.json")}
    assert "roc_auc" in rows, project["report"]
    _, _, before, after, change = rows["roc_auc"]
    assert float(before) == pytest.approx(main["roc_auc"], abs=1e-5)
    assert float(after) == pytest.approx(branch["roc_auc"], abs=1e-5)
    assert float(change) == pytest.approx(branch["roc_auc"] - main["roc_auc"], abs=2e-5)
    assert float(change) != 0


def test_report_compares_the_workspace_model_with_the_champion(project):
    report = project["report"]
    # Version 1 either way: the champion, or, when the branch's model took the alias (version 2), the champion
    # it replaced; the registry says which.
    champion = registry(project["root"]).get_model_version_by_alias("churn_model", "champion").version
    title = {"1": "champion", "2": "previous champion"}[str(champion)]
    assert f"\n| metric | {title} (version 1) | this workspace | change |\n" in report, report
    tags = registry_version(project["root"]).tags
    champion = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    (row,) = table_rows(report, "roc_auc")
    assert float(row[1]) == pytest.approx(champion["roc_auc"], abs=1e-4)
    assert "- The register stage's gate: passed.\n" in report, report  # model.C=0.05 clears its floors too
    assert "Serving checks (mlflow.models.validate_serving_input): serving_example ok, test_rows ok." in report


def test_report_plots_are_linked_relative_to_it(project):
    reports = project["root"] / "reports"
    links = re.findall(r"\]\(([^)]+)\)", project["report"])
    assert "review/roc.png" in links and "review/prc.png" in links and "review/plots/index.html" in links
    assert "figures/confusion_matrix.png" in links
    assert "model_card.md" in links  # the register stage's model card, beside the report
    assert all((reports / link).is_file() for link in links), links
    assert (reports / "review" / "roc.png").read_bytes().startswith(b"\x89PNG")
    status = run(["git", "status", "--porcelain"], project["root"]).stdout
    assert "review" not in status, "the report and its images are not for git"


def test_report_sections(project):
    headings = [line for line in project["report"].splitlines() if line.startswith("## ")]
    assert headings == [
        "## Params that differ",
        "## Metrics that differ",
        "## This workspace's model against the champion",
        "## Plots",
    ]
    assert project["report"].startswith("# Review: smaller-c against main\n")


def test_report_with_an_unknown_base_is_one_line(project):
    result = project["unknown_base"]
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: base revision 'no-such-branch' not found (nor origin/no-such-branch); fetch it, or pass BASE=<rev>"
    ]
