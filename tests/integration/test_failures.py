"""Failures leave nothing stuck and nothing misleading, end to end in a temporary git+DVC repository.

The process group of a real `dvc repro` is killed (SIGTERM, SIGKILL) while the MLflow store shows its train or
register stage running; then what `make run` runs (the Makefile's own commands: store init, dvc repro, registry
sync) must leave no run RUNNING, no staging folder, a champion that loads and a clean `git status`. Also: a
registration cut short, an empty dvc.lock, and the README's recovery commands after a failed `dvc exp run -S`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, project_env
from tests.integration.helpers import DVC, PYTHON, make_repo, mlflow_runs, parents_and_children, reproduce, run

pytestmark = pytest.mark.slow

NAME = "churn_model"
# A forest on a few thousand rows: train and register each take seconds, so a kill lands inside them.
PARAMS = {"model": {"type": "random_forest"}}
ROWS = 3000
README_MARK = "<!-- tests/integration/test_failures.py runs the next block"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("failures") / "repo", rows=ROWS, params=PARAMS)
    (root / ".venv").symlink_to(REPO / ".venv")  # bin/dvc, as in a clone after `make setup`
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")
    reproduce(root)
    return root


# --- what `make run` runs, read from the Makefile ----------------------------------------------------


def recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, with $(BIN)/python and $(BIN)/dvc as this interpreter's."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        text = line.strip().lstrip("@").replace("$(BIN)/python", PYTHON).replace("$(BIN)/dvc", " ".join(DVC))
        commands.append(shlex.split(text))
    return commands


def make_run_steps() -> list[list[str]]:
    """`make run` after setup and data: `make init`'s commands, then its own."""
    assert "init" in (REPO / "Makefile").read_text().split("\nrun:")[1].splitlines()[0].split("##")[0]
    return recipe("init") + recipe("run")


def test_make_run_checks_the_registry_after_dvc_repro():
    steps = [" ".join(step[1:]) for step in make_run_steps()]
    assert steps[0] == "-m churn.tools.store init"
    assert steps.index("-m dvc repro") < steps.index("-m churn.tools.registry sync")


def make_run(root: Path) -> str:
    """What `make run` runs (after setup and data), as it would; their output (stdout and stderr), joined."""
    results = [run(step, root) for step in make_run_steps()]
    return "".join(result.stdout + result.stderr for result in results)


# --- killing a pipeline inside a stage ----------------------------------------------------------------


def running(root: Path, stage: str, since_ms: int) -> bool:
    db = sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True, timeout=10)
    try:
        query = "select 1 from runs where name = ? and status = 'RUNNING' and start_time >= ?"
        return db.execute(query, (stage, since_ms)).fetchone() is not None
    except sqlite3.OperationalError:  # the store busy or being created: look again
        return False
    finally:
        db.close()


def group_alive(pgid: int) -> bool:
    import psutil

    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def kill_inside(root: Path, stage: str, signum: int, log: Path) -> None:
    """Start `dvc repro --force` in a process group of its own, wait until the MLflow store shows `stage`
    running, then send `signum` to the whole group and wait until every process of it is gone."""
    since = int(time.time() * 1000)
    with log.open("w") as output:
        proc = subprocess.Popen(
            [*DVC, "repro", "--force"], cwd=root, env=project_env(), stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 600
    while not running(root, stage, since):
        assert proc.poll() is None, f"dvc repro ended before {stage} ran:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{stage} never ran:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.3)  # into the stage's work
    os.killpg(proc.pid, signum)
    proc.wait(timeout=120)
    deadline = time.monotonic() + 60
    while group_alive(proc.pid):
        assert time.monotonic() < deadline, "processes of the killed group still run"
        time.sleep(0.1)


def latest(root: Path, stage: str):
    return max((r for r in mlflow_runs(root) if r.info.run_name == stage), key=lambda r: r.info.start_time)


def champion_scores(root: Path) -> list[float]:
    """The champion's churn probabilities for five raw rows, loaded as a user would (pyfunc, by alias)."""
    code = (
        "import json, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/churn_model@champion')\n"
        "print(json.dumps(model.predict(pd.read_csv('data/raw/customers.csv').head(5))[:, 1].tolist()))\n"
    )
    return json.loads(run([PYTHON, "-c", code], root).stdout.strip().splitlines()[-1])


def assert_clean(root: Path) -> None:
    """Nothing stuck, nothing misleading: no run RUNNING, no staging folder, a champion that loads, git clean."""
    assert [(r.info.run_name, r.info.status) for r in mlflow_runs(root) if r.info.status == "RUNNING"] == []
    assert sorted(p.name for p in root.glob(".staging-*")) == []
    assert run([PYTHON, "-m", "churn.tools.registry", "uri"], root).stdout.strip() == f"models:/{NAME}@champion"
    scores = champion_scores(root)
    assert len(scores) == 5 and all(0 < p < 1 for p in scores)
    assert run(["git", "status", "--porcelain"], root).stdout == ""


@pytest.mark.parametrize("stage", ["train", "register"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_pipeline_killed_inside_a_stage_leaves_nothing_stuck(repo, tmp_path, stage, signum):
    kill_inside(repo, stage, signum, tmp_path / "repro.log")
    killed = latest(repo, stage)
    parent_id = killed.data.tags["mlflow.parentRunId"]
    if signum == signal.SIGTERM:  # the stage ended its own run, and its parent followed
        assert killed.info.status == "KILLED", (tmp_path / "repro.log").read_text()[-3000:]
        assert killed.data.tags["error"] == "terminated by SIGTERM"
    else:  # nothing ran to end them: the next run must
        assert killed.info.status == "RUNNING", "the kill landed after the stage"
        # What a SIGKILL leaves mid-write (its timing varies): the next run removes it.
        (repo / f".staging-{stage}-{killed.data.tags['churn.pid']}" / "models").mkdir(parents=True, exist_ok=True)

    output = make_run(repo)

    assert latest(repo, stage).info.status == "KILLED"
    parents, _ = parents_and_children(mlflow_runs(repo))
    assert {p.info.run_id: p.info.status for p in parents}[parent_id] == "KILLED"
    if signum == signal.SIGKILL:
        assert "marked 1 MLflow run(s) KILLED whose process is gone" in output
        assert f"removed .staging-{stage}-" in output
    assert_clean(repo)


# --- a registration cut short ------------------------------------------------------------------------


def client(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def cut_registration_short(root: Path) -> str:
    """The registry as a kill right after create_model_version leaves it: the newest version, no alias."""
    registry = client(root)
    version = max(registry.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    for alias in list(registry.get_registered_model(NAME).aliases):
        registry.delete_registered_model_alias(NAME, alias)
    registry.delete_registered_model_tag(NAME, "champion.history")
    registry.delete_model_version_tag(NAME, version.version, "registry.settled")
    return str(version.version)


def aliases(root: Path) -> dict[str, str]:
    return {alias: str(v) for alias, v in client(root).get_registered_model(NAME).aliases.items()}


def test_make_run_repairs_a_registration_cut_short(repo):
    version = cut_registration_short(repo)
    line = run([PYTHON, "-m", "churn.tools.registry", "uri"], repo, check=False).stderr.strip()
    assert line.startswith("error: ") and "no version or alias 'champion'" in line  # what `make serve` met

    output = make_run(repo)  # dvc repro finds register up to date: nothing runs; the check repairs
    repaired = [line for line in output.splitlines() if "registration had been cut short" in line]
    assert len(repaired) == 1 and f"version {version} made challenger and champion" in repaired[0], output
    assert aliases(repo) == {"challenger": version, "champion": version}
    assert_clean(repo)


def test_a_registration_cut_short_is_repaired_when_dvc_restores_register_from_its_run_cache(repo):
    version = cut_registration_short(repo)
    (repo / "reports" / "register.json").unlink()
    output = make_run(repo)
    assert "Stage 'register' is cached - skipping run" in output  # restored: the stage's code did not run
    assert f"version {version} made challenger and champion" in output
    assert aliases(repo) == {"challenger": version, "champion": version}
    assert_clean(repo)


def test_forced_register_stage_heals_a_registration_cut_short(repo):
    version = cut_registration_short(repo)
    result = run([*DVC, "repro", "--force", "--single-item", "register"], repo)
    output = result.stdout + result.stderr
    assert f"identical to version {version}; no new version; its registration had been cut short" in output
    assert aliases(repo) == {"challenger": version, "champion": version}
    assert_clean(repo)


# --- dvc.lock left empty ------------------------------------------------------------------------------


def test_make_run_restores_an_empty_dvc_lock_from_git(repo):
    (repo / "dvc.lock").write_text("")
    assert "validation failed" in run([*DVC, "status"], repo, check=False).stderr  # what DVC alone says
    output = make_run(repo)
    assert "dvc.lock was empty (a DVC run was killed while rewriting it); restored the committed copy" in output
    assert_clean(repo)


def test_make_run_names_the_recovery_for_a_cut_short_dvc_lock(repo):
    committed = (repo / "dvc.lock").read_text()
    (repo / "dvc.lock").write_text(committed[: committed.index("    cmd:")])  # cut after the first stage's name
    result = run(make_run_steps()[0], repo, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "git checkout dvc.lock" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    run(["git", "checkout", "dvc.lock"], repo)
    make_run(repo)
    assert_clean(repo)


# --- the README's recovery commands ---------------------------------------------------------------------


def readme_recovery_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    found = re.search(re.escape(README_MARK) + r"[^\n]*\n```sh\n(.*?)\n```", text, re.DOTALL)
    assert found, "README.md: the recovery block after the test_failures.py mark is missing"
    return [line.split("#")[0].strip() for line in found.group(1).splitlines() if line.split("#")[0].strip()]


def test_the_readme_recovery_commands_restore_a_clean_workspace_after_a_failed_experiment(repo):
    commands = readme_recovery_block()
    assert 1 <= len(commands) <= 2, commands
    failed = run(["bin/dvc", "exp", "run", "-S", "model.C=-1"], repo, check=False)
    assert failed.returncode != 0
    assert "model.C must be a number > 0, got -1" in failed.stdout + failed.stderr
    assert "C: -1" in (repo / "params.yaml").read_text()  # DVC kept the value that failed
    assert not (repo / "models" / "model.pkl").exists()  # and removed the output of the stage that failed

    for command in commands:
        subprocess.run(command, shell=True, cwd=repo, env=project_env(), check=True, capture_output=True, text=True)

    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert "Data and pipelines are up to date" in run(["bin/dvc", "status"], repo).stdout
    assert (repo / "models" / "model.pkl").exists()
    assert_clean(repo)
