"""Queued sweeps lose nothing: real `dvc exp run --queue` + `dvc queue start -j 2`, counted in MLflow."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import project_env, require
from tests.integration.helpers import (
    DVC,
    PYTHON,
    exp_show,
    make_repo,
    mlflow_runs,
    parents_and_children,
    reproduce,
    run,
)

pytestmark = pytest.mark.slow
TRAIN_ON = {"train", "evaluate", "register"}


def run_queue(root: Path, jobs: int, env: dict | None = None) -> str:
    """`dvc queue start -j N` until every queued experiment has run, as `make sweep` does (churn.tools.sweep)."""
    code = f"from churn.tools.sweep import run_queue; print(run_queue({jobs}, poll_s=2.0))"
    return run([PYTHON, "-c", code], root, env).stdout


def experiments(root: Path) -> dict[str, dict]:
    return {
        e["name"]: rev for base in exp_show(root) for e in base.get("experiments") or [] for rev in e.get("revs") or []
    }


def no_store_under_dvc_tmp(root: Path) -> list[Path]:
    names = {"mlflow.db", "mlruns", "mlartifacts"}
    return [p for p in (root / ".dvc" / "tmp").rglob("*") if p.name in names]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("sweep") / "repo")
    reproduce(root)
    return root


def test_queued_grid_with_two_workers_tracks_every_experiment(repo):
    before = {r.info.run_id for r in mlflow_runs(repo)}
    queued = run([*DVC, "exp", "run", "--queue", "-S", "model.C=0.01,0.1,1"], repo).stdout
    assert queued.count("Queued experiment") == 3
    status = run_queue(repo, 2)
    assert status.count("Success") == 3, status

    names = set(experiments(repo))
    assert len(names) == 3
    new = [r for r in mlflow_runs(repo) if r.info.run_id not in before]
    parents, children = parents_and_children(new)
    assert sorted(p.data.tags["dvc.exp_name"] for p in parents) == sorted(names)
    for parent in parents:
        assert parent.data.tags["dvc.baseline_rev"] == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
        assert {c.data.tags["dvc.stage"] for c in children[parent.info.run_id]} == TRAIN_ON
    assert no_store_under_dvc_tmp(repo) == []


def test_run_cache_restore_stays_traceable_and_compare_agrees(repo):
    """The same params again: DVC restores train/evaluate/register from its run-cache, no stage runs,
    and `churn.tools.compare` still leads from the new experiment to the run that computed its results."""
    before = {r.info.run_id for r in mlflow_runs(repo)}
    run([*DVC, "exp", "run", "-S", "model.C=0.01", "--name", "again-001"], repo)
    assert {r.info.run_id for r in mlflow_runs(repo)} == before  # nothing ran, nothing logged

    result = run([PYTHON, "-m", "churn.tools.compare"], repo)
    text = result.stdout + result.stderr
    assert "again-001" in text
    row = next(line for line in text.splitlines() if line.startswith("again-001"))
    assert "(restored)" in row
    original = next(
        r
        for r in mlflow_runs(repo)
        if r.data.tags.get("churn.role") == "pipeline" and r.data.params.get("model.C") == "0.01"
    )
    assert original.info.run_id[:12] in row
    # compare tagged each experiment's own parent with its commit
    exps = experiments(repo)
    tagged = {
        r.data.tags.get("dvc.exp_name"): r.data.tags.get("dvc.exp_rev")
        for r in mlflow_runs(repo)
        if r.data.tags.get("churn.role") == "pipeline" and r.data.tags.get("dvc.exp_name")
    }
    for name, rev in tagged.items():
        assert rev == exps[name]["rev"], name
    assert (repo / "reports" / "compare.html").exists()


def test_compare_html_renders_in_headless_chromium(repo, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(chromium, "chromium is not installed: install Debian's chromium (apt-get install chromium; .ci/run does)")
    run([PYTHON, "-m", "churn.tools.compare"], repo)
    page = (repo / "reports" / "compare.html").as_uri()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<tr>") >= 4 + 1  # header + baseline + 3 sweep experiments (+ the restored one)
    assert dom.stdout.count('class="series"') >= 2 * 3  # ROC and PR curves of several experiments
    shot = tmp_path / "compare.png"
    done = subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1400,1200", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image  # matplotlib's dependency

    image = Image.open(shot).convert("RGB")
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colours  # the first curve's colour was drawn
    assert len(colours) > 50


def test_sweep_into_a_store_that_does_not_exist_yet(tmp_path):
    """Two workers start against a store nobody created: its creation is serialised by the file lock."""
    root = make_repo(tmp_path / "repo", rows=400)
    assert not (root / "mlflow.db").exists()
    run([*DVC, "exp", "run", "--queue", "-S", "model.C=0.05,0.2"], root)
    status = run_queue(root, 2)
    assert status.count("Success") == 2, status
    parents, children = parents_and_children(mlflow_runs(root))
    assert len(parents) == 2
    assert all(len(children[p.info.run_id]) == 5 for p in parents)
    assert no_store_under_dvc_tmp(root) == []


def test_a_stamped_tracking_uri_wins_over_a_worker_environment(tmp_path):
    """`make sweep` stamps the store into each queued experiment: a worker whose environment points
    elsewhere cannot redirect the runs."""
    root = make_repo(tmp_path / "repo", rows=400)
    reproduce(root)
    intended = f"sqlite:///{root / 'mlflow.db'}"
    run([*DVC, "exp", "run", "--queue", "-S", "model.C=0.3", "-S", f"mlflow.tracking_uri={intended}"], root)
    elsewhere = tmp_path / "elsewhere.db"
    env = project_env(MLFLOW_TRACKING_URI=f"sqlite:///{elsewhere}")
    assert run_queue(root, 1, env).count("Success") == 1
    assert not elsewhere.exists()
    names = {p.data.tags.get("dvc.exp_name") for p in parents_and_children(mlflow_runs(root))[0]}
    assert set(experiments(root)) <= names


def test_sweep_queues_each_family_and_compare_names_the_winner(repo):
    """`make sweep` in small: two families' grids from params `sweep`, run with two workers."""
    import yaml

    settings = yaml.safe_load((repo / "params.yaml").read_text())
    settings["sweep"] = {
        "logistic_regression": {"C": [0.05]},
        "xgboost": {"n_estimators": [20, 40], "max_depth": [2], "learning_rate": [0.1]},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    before = set(experiments(repo))
    run([PYTHON, "-m", "churn.tools.sweep", "--run", "--jobs", "2"], repo)
    new = {name: rev for name, rev in experiments(repo).items() if name not in before}
    assert len(new) == 3
    types = sorted(r["data"]["params"]["params.yaml"]["data"]["model"]["type"] for r in new.values())
    assert types == ["logistic_regression", "xgboost", "xgboost"]
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    assert all(r["data"]["params"]["params.yaml"]["data"]["mlflow"]["tracking_uri"] == uri for r in new.values())

    import re

    text = run([PYTHON, "-m", "churn.tools.compare"], repo).stderr
    rows = text[text.index("experiment ") :].splitlines()[2:]
    rows = [r for r in rows if re.search(r"\s\d\.\d{4}\s", r)]
    roc = [float(re.search(r"\s(\d\.\d{4})\s", r).group(1)) for r in rows]
    assert len(roc) >= len(new) + 1
    assert roc == sorted(roc, reverse=True)  # ranked: the winner is the first row
