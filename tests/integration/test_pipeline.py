"""Real `dvc repro` and `dvc exp run` in a temporary git repository, checked in DVC and in MLflow."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import project_env
from tests.integration.helpers import (
    DVC,
    exp_show,
    make_repo,
    mlflow_runs,
    parents_and_children,
    reproduce,
    run,
)

pytestmark = pytest.mark.slow
STAGES = {"prepare", "featurize", "train", "evaluate", "register"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    reproduce(root)
    return root


def test_repro_runs_every_stage_under_one_parent(repo):
    parents, children = parents_and_children(mlflow_runs(repo))
    assert len(parents) == 1
    kids = children[parents[0].info.run_id]
    assert {k.data.tags["dvc.stage"] for k in kids} == STAGES
    for kid in kids:
        tags = kid.data.tags
        assert kid.info.status == "FINISHED"
        assert len(tags["data.md5"]) == 32
        # The sandbox's commit holds no outputs: each stage's are new, untracked files, which leave it clean.
        assert tags["git.dirty"] == "false"
        # the commit the pipeline ran at (the fixture committed the results on top of it)
        assert tags["mlflow.source.git.commit"] == run(["git", "rev-parse", "HEAD~1"], repo).stdout.strip()
        assert tags["git.commit"] == tags["mlflow.source.git.commit"]
        assert "dvc.exp_name" not in tags  # plain repro: DVC provides no experiment name
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    point = {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier"}
    intervals = {f"{m}_ci_{side}" for m in ("roc_auc", "pr_auc", "f1", "log_loss", "brier") for side in ("low", "high")}
    trust = {"ece", "precision_at_k", "recall_at_k", "worst_slice_roc_auc"}  # calibration, lift, slices
    assert set(metrics) == point | intervals | trust
    assert parents[0].data.metrics["test_roc_auc"] == metrics["roc_auc"]


def test_raw_data_md5_tag_matches_the_dvc_pointer(repo):
    import yaml

    pointer = yaml.safe_load((repo / "data" / "raw" / "customers.csv.dvc").read_text())
    prepare = [r for r in mlflow_runs(repo) if r.data.tags.get("dvc.stage") == "prepare"]
    assert prepare[0].data.tags["data.md5"] == pointer["outs"][0]["md5"]


def test_second_repro_is_up_to_date_and_logs_nothing(repo):
    before = len(mlflow_runs(repo))
    result = run([*DVC, "repro"], repo)
    assert "up to date" in result.stdout
    assert len(mlflow_runs(repo)) == before


def test_metrics_and_plots_commands_work(repo):
    shown = run([*DVC, "metrics", "show", "--json"], repo).stdout
    assert "roc_auc" in shown
    run([*DVC, "metrics", "diff"], repo)
    result = run([*DVC, "plots", "show", "-o", "dvc_plots"], repo)
    assert (repo / "dvc_plots" / "index.html").exists(), result.stdout


def test_stages_run_warm_and_cold_alike(repo, warm_servers):
    """Stages are handed to the session's warm stage server (warmfork); with WARMFORK=0 each runs in a
    fresh interpreter. Both ways write byte-identical outputs and log one parent with five stage runs."""
    # the server for this environment (the fixture's first stage started it in the background)
    run([str(repo / "bin" / "py"), "-m", "warmfork", "--start"], repo)  # bin/py names the warm-up file
    committed = (repo / "dvc.lock").read_text()
    before = {r.info.run_id for r in mlflow_runs(repo)}

    run([*DVC, "repro", "-f"], repo)
    served = "".join(log.read_text() for log in warm_servers.glob("*.log"))
    for stage in STAGES:
        assert f"churn.pipeline.{stage} runs in" in served and f"for {repo}" in served
    assert (repo / "dvc.lock").read_text() == committed
    run([*DVC, "repro", "-f"], repo, env=project_env(WARMFORK="0"))
    assert (repo / "dvc.lock").read_text() == committed

    parents, children = parents_and_children([r for r in mlflow_runs(repo) if r.info.run_id not in before])
    assert len(parents) == 2
    for parent in parents:
        kids = children[parent.info.run_id]
        assert sorted(k.data.tags["dvc.stage"] for k in kids) == sorted(STAGES)
        assert all(k.info.status == "FINISHED" for k in kids)
    # prepare's datasets carry the md5 of the files, as dvc.lock records them
    lock = yaml.safe_load(committed)["stages"]["prepare"]["outs"]
    prepare = next(k for p in parents for k in children[p.info.run_id] if k.data.tags["dvc.stage"] == "prepare")
    digests = {d.dataset.name: d.dataset.digest for d in prepare.inputs.dataset_inputs}
    assert digests["prepared_train"] == next(o["md5"] for o in lock if o["path"].endswith("train.parquet"))
    assert digests["prepared_test"] == next(o["md5"] for o in lock if o["path"].endswith("test.parquet"))


def test_exp_run_changes_C_and_tracks_one_parent_with_its_stage_runs(repo):
    before = {r.info.run_id for r in mlflow_runs(repo)}
    run([*DVC, "exp", "run", "-S", "model.C=0.1"], repo)

    revs = [rev for base in exp_show(repo) for e in base.get("experiments") or [] for rev in e.get("revs") or []]
    assert revs, "dvc exp show lists no experiment"
    exp = revs[-1]
    params = exp["data"]["params"]["params.yaml"]["data"]
    assert params["model"]["C"] == 0.1
    assert exp["data"]["metrics"]["reports/metrics.json"]["data"]["roc_auc"] > 0.5
    name = exp["name"]

    new = [r for r in mlflow_runs(repo) if r.info.run_id not in before]
    parents, children = parents_and_children(new)
    assert [p.data.tags["dvc.exp_name"] for p in parents] == [name]
    assert parents[0].data.tags["dvc.baseline_rev"] == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    kids = children[parents[0].info.run_id]
    # model.C is a train parameter: prepare and featurize are unchanged and skipped.
    assert {k.data.tags["dvc.stage"] for k in kids} == {"train", "evaluate", "register"}
    assert all(k.data.tags["dvc.exp_name"] == name for k in kids)
    train = next(k for k in kids if k.data.tags["dvc.stage"] == "train")
    assert train.data.params["model.C"] == "0.1"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("model.type=svm", "model.type must be one of"),
        ("model.C=0", "model.C must be a number > 0"),
        ("model.C=-1", "model.C must be a number > 0"),
        ("prepare.test_size=1.5", "prepare.test_size must be a number in the open interval (0, 1)"),
    ],
)
def test_invalid_parameter_fails_in_one_line_and_writes_nothing(repo, setting, expected):
    lock_before = (repo / "dvc.lock").read_text()
    result = run([*DVC, "exp", "run", "--temp", "-S", setting], repo, check=False)
    assert result.returncode != 0
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert expected in error_lines[0]
    assert (repo / "dvc.lock").read_text() == lock_before
    assert not list(repo.rglob(".staging-*"))
