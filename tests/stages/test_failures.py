"""Failures leave nothing stuck and nothing misleading, on a real MLflow store (no DVC): runs whose process is
gone end KILLED, a parent follows its children, SIGTERM and SIGHUP end a stage's run KILLED, staging folders
of killed stages go, a dvc.lock left empty comes back from git, a registration cut short heals, and the gate
does not compare a candidate with a champion trained on other data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from churn.errors import ChurnError
from churn.system import boot_id, check_dvc_lock, process_started, remove_stale_dirs
from churn.tracking import runs
from churn.tracking.registry import CHALLENGER, CHAMPION, DUE_TAG, SETTLED_TAG, Candidate, register, settle
from tests.conftest import REPO

NAME = "churn_model"


@pytest.fixture
def store(migrated_store):
    from churn.tracking.store import connect

    return connect("churn", f"sqlite:///{migrated_store}")


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def process_tags(pid: int, started: float | None = None, host: str | None = None) -> dict[str, str]:
    started = process_started(pid) if started is None else started
    return {
        runs.HOST_TAG: host or socket.gethostname(),
        runs.PID_TAG: str(pid),
        runs.PID_START_TAG: f"{started:.2f}" if started else "",
        runs.BOOT_TAG: boot_id(),
    }


def new_run(store, name: str, tags: dict[str, str], parent: str | None = None, status: str = "RUNNING") -> str:
    tags = {**tags, runs.STAGE_TAG: name} if parent else dict(tags)
    if parent:
        tags[runs.PARENT_ID_TAG] = parent
    run_id = store.client.create_run(store.experiment_id, run_name=name, tags=tags).info.run_id
    if status != "RUNNING":
        store.client.set_terminated(run_id, status)
    return run_id


def status(store, run_id: str) -> str:
    return store.client.get_run(run_id).info.status


# --- runs whose process is gone ------------------------------------------------------------------


def test_runs_whose_process_is_gone_end_killed_and_their_parent_follows(store):
    gone = process_tags(dead_pid(), started=1.0)
    parent = new_run(store, "repro@abc", {**gone, runs.PARENT_TAG: "pipeline"})
    prepare = new_run(store, "prepare", gone, parent, status="FINISHED")
    train = new_run(store, "train", gone, parent)
    alive = new_run(store, "alive", process_tags(os.getpid()))
    reused = new_run(store, "reused", process_tags(os.getpid(), started=1.0))  # same pid, another process
    elsewhere = new_run(store, "elsewhere", process_tags(dead_pid(), host="another-host"))
    untagged = new_run(store, "tune-trial", {})  # another tool's run: nothing to tell by

    assert sorted(runs.end_dead_runs(store)) == sorted([train, reused])
    assert status(store, train) == status(store, reused) == "KILLED"
    assert "ended without ending this run" in store.client.get_run(train).data.tags["error"]
    assert status(store, parent) == "KILLED"
    assert status(store, prepare) == "FINISHED"
    assert {status(store, r) for r in (alive, elsewhere, untagged)} == {"RUNNING"}
    assert runs.end_dead_runs(store) == []  # nothing left to do


def test_a_parent_left_running_before_its_first_stage_run_ends_killed(store):
    parent = new_run(store, "repro@abc", {**process_tags(dead_pid()), runs.PARENT_TAG: "pipeline"})
    live = new_run(store, "repro@def", {**process_tags(os.getpid()), runs.PARENT_TAG: "pipeline"})
    runs.end_dead_runs(store)
    assert status(store, parent) == "KILLED"
    assert status(store, live) == "RUNNING"


def test_the_next_pipeline_run_ends_what_a_killed_one_left_running(store, monkeypatch):
    left = new_run(store, "train", process_tags(dead_pid()))
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "the-next-pipeline-run")
    parent = runs.find_or_create_parent(store, {}).run_id
    assert status(store, left) == "KILLED"
    assert store.client.get_run(parent).data.tags[runs.PID_TAG] == str(os.getpid())  # the parent's creator


def test_an_execution_that_reuses_a_parent_also_ends_what_a_killed_one_left_running(store, monkeypatch):
    """`dvc exp run -f` with the same name and params finds the earlier execution's parent: its first stage ends
    this host's dead runs too (the parent's execution tag names another process), later stages do not look."""
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "exp:abc:again:0123")
    first = runs.find_or_create_parent(store, {})
    store.client.set_tag(first.run_id, runs.EXECUTION_TAG, "elsewhere:1:1.00")  # an earlier execution's
    left = new_run(store, "train", process_tags(dead_pid()), first.run_id)
    reused = runs.find_or_create_parent(store, {})
    assert reused.run_id == first.run_id
    assert status(store, left) == "KILLED"
    assert reused.tags[f"{runs.STAGE_STATUS_TAG}train"] == "KILLED"  # read again after the sweep settled it
    later = new_run(store, "evaluate", process_tags(dead_pid()))
    store.client.set_tag(first.run_id, runs.EXECUTION_TAG, runs.execution_tag())  # as the first stage leaves it
    runs.find_or_create_parent(store, {})
    assert status(store, later) == "RUNNING"  # same execution: no sweep


def test_a_run_from_before_a_reboot_is_gone(store):
    before = {**process_tags(os.getpid()), runs.BOOT_TAG: "another-boot"}
    assert runs.run_process_gone(before)
    assert not runs.run_process_gone(process_tags(os.getpid()))


@pytest.mark.parametrize(
    ("children", "expected"),
    [
        ([("prepare", "FINISHED"), ("train", "FINISHED")], "FINISHED"),
        ([("prepare", "FINISHED"), ("train", "FAILED")], "FAILED"),
        ([("prepare", "FINISHED"), ("train", "KILLED")], "KILLED"),
        ([("train", "KILLED"), ("evaluate", "FAILED")], "FAILED"),
        ([("train", "FAILED"), ("train", "FINISHED")], "FINISHED"),  # the stage's latest run counts
        ([("prepare", "FINISHED"), ("train", "RUNNING")], "RUNNING"),  # left as it is
    ],
)
def test_a_parent_is_finished_only_when_every_stage_is(store, children, expected):
    parent = new_run(store, "repro@abc", {runs.PARENT_TAG: "pipeline"})
    for name, state in children:
        new_run(store, name, {}, parent, status=state)
        time.sleep(0.002)  # distinct start times
    assert runs.settle_parent(store, parent) == expected
    assert status(store, parent) == expected


STAGE_SCRIPT = """
import pathlib, time
from churn.pipeline import entry
from churn.tracking.runs import stage_run

def run(params):
    with stage_run("train", params.mlflow, []):
        pathlib.Path("started").touch()
        time.sleep(60)

entry(run)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_the_stage_run_killed(workspace, migrated_store, signum):
    from mlflow import MlflowClient

    script = workspace / "stage.py"
    script.write_text(STAGE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (workspace / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert f"error: terminated by {signal.Signals(signum).name}" in stderr.splitlines()
    assert "Traceback" not in stderr
    client = MlflowClient(f"sqlite:///{migrated_store}")
    found = client.search_runs([client.get_experiment_by_name("churn").experiment_id])
    assert {r.info.run_name: r.info.status for r in found} == {"train": "KILLED", f"test-{workspace.name}": "KILLED"}
    train = next(r for r in found if r.info.run_name == "train")
    assert train.data.tags[runs.PID_TAG] == str(proc.pid)
    assert train.data.tags[runs.HOST_TAG] == socket.gethostname()


# --- staging folders -----------------------------------------------------------------------------


def test_the_next_run_of_a_stage_removes_the_staging_folders_of_killed_runs(tmp_path, monkeypatch):
    from churn.storage.outputs import StagedOutputs

    monkeypatch.chdir(tmp_path)
    gone, live = dead_pid(), os.getppid()
    for name in (f".staging-train-{gone}", f".staging-train-{live}", f".staging-register-{gone}"):
        (tmp_path / name / "models").mkdir(parents=True)
    with StagedOutputs("train"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".staging-register-{gone}", f".staging-train-{live}"]
    assert remove_stale_dirs(".staging-*-*") == [Path(f".staging-register-{gone}")]
    assert [p.name for p in tmp_path.iterdir()] == [f".staging-train-{live}"]


# --- dvc.lock ------------------------------------------------------------------------------------


@pytest.fixture
def git_repo(tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copyfile(REPO / "dvc.lock", tmp_path / "dvc.lock")
    subprocess.run(["git", "add", "dvc.lock"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "lock"], cwd=tmp_path, check=True, env=env)
    return tmp_path


def test_a_valid_or_missing_dvc_lock_passes(git_repo, tmp_path_factory):
    assert check_dvc_lock(git_repo) is None
    assert check_dvc_lock(tmp_path_factory.mktemp("none")) is None


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_dvc_lock_comes_back_from_git(git_repo, content):
    (git_repo / "dvc.lock").write_text(content)
    line = check_dvc_lock(git_repo)
    assert line == (
        "dvc.lock was empty (a DVC run was killed while rewriting it); restored the committed copy "
        "(git checkout dvc.lock)"
    )
    assert (git_repo / "dvc.lock").read_bytes() == (REPO / "dvc.lock").read_bytes()


def test_an_empty_dvc_lock_git_does_not_hold_is_removed(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text("")
    assert "removed it" in check_dvc_lock(tmp_path)
    assert not (tmp_path / "dvc.lock").exists()


@pytest.mark.parametrize(
    "content",
    [
        "schema: '2.0'\nstages:\n  prepare:\n    deps:\n    - path: data/raw/customers.csv\n",  # cut before cmd
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: bin/py\n    deps:\n    - path: \"data/ra",  # mid-token
    ],
)
def test_a_cut_short_dvc_lock_is_one_line_saying_how_to_recover(git_repo, content):
    (git_repo / "dvc.lock").write_text(content)
    with pytest.raises(ChurnError) as caught:
        check_dvc_lock(git_repo)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith("dvc.lock: not a valid DVC lock file (")
    assert "git checkout dvc.lock" in line


def test_bin_dvc_restores_an_empty_dvc_lock_from_git(git_repo):
    (git_repo / "bin").mkdir()
    shutil.copy2(REPO / "bin" / "dvc", git_repo / "bin" / "dvc")
    (git_repo / ".venv").symlink_to(REPO / ".venv")
    (git_repo / "dvc.lock").write_text("")
    result = subprocess.run(["bin/dvc", "--version"], cwd=git_repo, capture_output=True, text=True, check=True)
    assert result.stderr.splitlines() == [
        "bin/dvc: dvc.lock was empty (a DVC run was killed while rewriting it); restored the committed copy "
        "(git checkout dvc.lock)"
    ]
    assert (git_repo / "dvc.lock").read_bytes() == (REPO / "dvc.lock").read_bytes()


# --- the registry: registrations cut short, and other data -----------------------------------------


@pytest.fixture
def registry(store, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(store.uri, registry_uri=store.uri)
    client.create_registered_model(NAME)
    return client


def candidate(client, experiment_id: str, md5: str, roc_auc: float, data_md5: str = "data-a") -> Candidate:
    run_id = client.create_run(experiment_id).info.run_id
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    return Candidate(source, run_id, md5, {"roc_auc": roc_auc}, {"data.md5": data_md5}, "{}")


def cut_short(client, experiment_id: str, md5: str, roc_auc: float, due: str | None = "challenger,champion") -> str:
    """A version created as the register stage creates one, whose process was killed before any alias moved."""
    found = candidate(client, experiment_id, md5, roc_auc)
    tags = {"model.md5": md5, "metric.roc_auc": str(roc_auc), "data.md5": "data-a"}
    if due is not None:
        tags[DUE_TAG] = due
    return str(client.create_model_version(NAME, source=found.model_uri, run_id=found.run_id, tags=tags).version)


def aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def do_register(client, found: Candidate, allow_other_data: bool = False):
    return register(
        client, NAME, found, primary_metric="roc_auc", min_improvement=0.0, allow_other_data=allow_other_data
    )


def test_registering_an_identical_version_gives_it_the_aliases_it_was_due(registry, store):
    version = cut_short(registry, store.experiment_id, "md5-1", 0.8)
    assert aliases(registry) == {}
    outcome = do_register(registry, candidate(registry, store.experiment_id, "md5-1", 0.8))
    assert not outcome.created and outcome.champion
    assert outcome.reason == (
        "identical to version 1; no new version; its registration had been cut short: made it challenger and champion"
    )
    assert aliases(registry) == {CHALLENGER: version, CHAMPION: version}
    assert registry.get_model_version(NAME, version).tags[SETTLED_TAG] == "true"
    assert registry.get_registered_model(NAME).tags["champion.history"] == version
    again = do_register(registry, candidate(registry, store.experiment_id, "md5-1", 0.8))
    assert again.reason == "identical to version 1; no new version"


def test_a_settled_version_never_takes_back_an_alias_moved_since(registry, store):
    do_register(registry, candidate(registry, store.experiment_id, "md5-1", 0.8))
    do_register(registry, candidate(registry, store.experiment_id, "md5-2", 0.9))
    assert aliases(registry) == {CHALLENGER: "2", CHAMPION: "2"}
    from churn.tracking.registry import set_champion

    set_champion(registry, NAME, "1")  # a promotion by hand
    outcome = do_register(registry, candidate(registry, store.experiment_id, "md5-2", 0.9))
    assert outcome.reason == "identical to version 2; no new version"
    assert aliases(registry) == {CHALLENGER: "2", CHAMPION: "1"}


def test_an_alias_moved_on_to_a_newer_version_stays_there(registry, store):
    old = cut_short(registry, store.experiment_id, "md5-1", 0.8)
    do_register(registry, candidate(registry, store.experiment_id, "md5-2", 0.9))  # version 2, first champion
    assert settle(registry, NAME, registry.get_model_version(NAME, old)) == []
    assert aliases(registry) == {CHALLENGER: "2", CHAMPION: "2"}


def test_a_version_from_before_the_due_tag_becomes_champion_only_when_there_is_none(registry, store):
    version = cut_short(registry, store.experiment_id, "md5-1", 0.8, due=None)
    assert settle(registry, NAME, registry.get_model_version(NAME, version)) == [CHALLENGER, CHAMPION]
    assert aliases(registry) == {CHALLENGER: "1", CHAMPION: "1"}


def test_a_champion_trained_on_other_data_is_not_compared_unless_params_allow(registry, store):
    do_register(registry, candidate(registry, store.experiment_id, "md5-1", 0.70, data_md5="data-a"))
    better = do_register(registry, candidate(registry, store.experiment_id, "md5-2", 0.95, data_md5="data-b"))
    assert better.created and not better.champion
    assert better.reason.startswith("not compared with champion version 1, trained on other data (data.md5 data-a")
    assert "register.allow_other_data: true" in better.reason
    assert aliases(registry) == {CHALLENGER: "2", CHAMPION: "1"}
    allowed = do_register(
        registry, candidate(registry, store.experiment_id, "md5-3", 0.96, data_md5="data-b"), allow_other_data=True
    )
    assert allowed.champion and allowed.reason.startswith("beats version 1 on roc_auc")
    same_data = do_register(registry, candidate(registry, store.experiment_id, "md5-4", 0.97, data_md5="data-b"))
    assert same_data.champion and same_data.reason.startswith("beats version 3")
    assert registry.get_model_version(NAME, "2").tags[DUE_TAG] == CHALLENGER


def test_sync_repairs_the_registry_from_the_decision(registry, store, workspace):
    from churn.tools.registry import sync

    decision = workspace / "reports" / "register.json"
    assert "not found" in sync(registry, NAME)
    decision.parent.mkdir(parents=True, exist_ok=True)
    decision.write_text(json.dumps({"passed": False, "checks": {}, "model_md5": "md5-1"}))
    assert "did not pass the gate" in sync(registry, NAME)
    version = cut_short(registry, store.experiment_id, "md5-1", 0.8)
    decision.write_text(json.dumps({"passed": True, "checks": {}, "model_md5": "md5-1"}))
    assert sync(registry, NAME) == (
        f"registry {NAME}: version {version} made challenger and champion, as reports/register.json decided "
        "(its registration had been cut short)"
    )
    assert aliases(registry) == {CHALLENGER: version, CHAMPION: version}
    assert sync(registry, NAME) == f"registry {NAME}: version {version} agrees with reports/register.json"
