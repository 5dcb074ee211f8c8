"""Tuning across hosts: three workers from three clones of one commit on one PostgreSQL study, one of them
SIGKILLed mid-trial. The study still reaches its trials; the killed trial is failed and retried by another
worker; every trial's MLflow run sits under one parent and none is left RUNNING; a worker at another commit
refuses to join; and `make tune APPLY=1` afterwards gives a DVC experiment with the best trial's CV score.
Also: the compose stack's `tuner` service, checked offline like the rest of docker-compose.yml."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from importlib.metadata import distribution
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RDBStorage

from tests.conftest import REPO, project_env
from tests.integration.helpers import DVC, PYTHON, exp_show, make_repo, run
from tests.integration.services import optuna_storage, postgres_database

TRIALS = 12
# The default study name (`make tune` below names none): family logistic_regression, metric roc_auc.
STUDY = "churn-logistic_regression-roc_auc"
# Heartbeats every second; a trial without one for 20 s is stale: longer than workers started together take to
# begin their first trials one after another on a busy machine (the first one stopped waits for the last one).
# The late worker, which must find the run open however long it takes to start, is started while every other
# worker is stopped mid-trial, and with a grace period longer than the test: it fails none of their trials.
FAULTS = ["--heartbeat-interval", "1", "--grace-period", "20"]
LATE_FAULTS = ["--heartbeat-interval", "1", "--grace-period", "900"]
# No pruning: every trial runs its three folds, so the study's count of complete trials is exact.
TUNE_PARAMS = {"pruner": {"n_startup_trials": 1000, "n_warmup_steps": 0}}
START_S = 120  # for a worker to start its first trial (imports, data, MLflow)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_server):
    """Three clones of one commit (featurize outputs pulled from the DVC remote, as on three hosts), a fourth
    one commit ahead; one Optuna database; one MLflow store for all (the first clone's, by absolute path)."""
    base = tmp_path_factory.mktemp("cluster")
    origin = make_repo(base / "origin", rows=4000, params={"tune": TUNE_PARAMS})
    run([*DVC, "repro", "featurize"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "featurized"], origin)
    run([*DVC, "push", "-q"], origin)
    clones = []
    for name in ("host-a", "host-b", "host-c", "host-ahead"):
        clone = base / name
        run(["git", "clone", "-q", str(origin), str(clone)], base)
        run([*DVC, "pull", "-q", "--with-deps", "featurize"], clone)  # the default remote: base/dvc-storage
        clones.append(clone)
    run(["git", "commit", "-q", "--allow-empty", "-m", "a commit the others do not have"], clones[3])
    tracking = f"sqlite:///{clones[0] / 'mlflow.db'}"
    env = project_env(MLFLOW_TRACKING_URI=tracking)
    run([PYTHON, "-m", "churn.tools.store", "init"], clones[0], env)  # the store, created once before the workers
    with postgres_database(postgres_server, "cluster") as storage:
        yield {"clones": clones, "env": env, "storage": storage, "tracking": tracking}


@pytest.fixture
def study_storage(cluster):
    """The test's own reads of the workers' study, on one connection pool closed at the end."""
    with optuna_storage(cluster["storage"]) as storage:
        yield storage


def start_worker(
    clone: Path, env: dict[str, str], storage: str, logs: Path, faults: list[str] = FAULTS
) -> subprocess.Popen:
    """One worker, as `make tune` starts it (bin/py execs Python, so the pid is the worker's own)."""
    command = ["bin/py", "-m", "churn.tools.tune", "--no-progress", "--storage", storage, "--trials", str(TRIALS)]
    with (logs / f"{clone.name}.log").open("w") as out:
        return subprocess.Popen([*command, *faults], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_run(storage: RDBStorage) -> dict:
    """The run the first worker recorded in the study (its target and commit)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError):  # no study yet
            if record := optuna.load_study(study_name=STUDY, storage=storage).user_attrs.get("churn.run"):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no worker started a run within {START_S} s")


def trials_of(storage: RDBStorage) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def running_trials_of(storage: RDBStorage, owner: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials_of(storage) if t.user_attrs.get("worker") == owner and t.state.name == "RUNNING"]


def stop_each_mid_trial(workers: list[subprocess.Popen], storage: RDBStorage) -> list[optuna.trial.FrozenTrial]:
    """SIGSTOP each worker while one of its trials is RUNNING (look, stop it, look again: it cannot finish the
    trial in between), until all are stopped; returns their trials. So every worker is at work before any of
    them can finish the run, however slowly each one starts. A stopped worker sends no heartbeats."""
    owners = {worker.pid: f"{socket.gethostname()}:{worker.pid}" for worker in workers}
    stopped: dict[int, optuna.trial.FrozenTrial] = {}
    deadline = time.monotonic() + START_S
    while len(stopped) < len(workers):
        assert time.monotonic() < deadline, f"workers {set(owners) - set(stopped)} ran no trial within {START_S} s"
        for worker in workers:
            if worker.pid in stopped:
                continue
            assert worker.poll() is None, f"worker {worker.pid} exited {worker.returncode} before its first trial"
            if running_trials_of(storage, owners[worker.pid]):
                os.kill(worker.pid, signal.SIGSTOP)
                if running := running_trials_of(storage, owners[worker.pid]):
                    stopped[worker.pid] = running[0]
                else:
                    os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.02)
    return [stopped[worker.pid] for worker in workers]


def mlflow_trial_runs(tracking: str) -> tuple[list, list]:
    """(the study's parent runs, the runs nested under any of them) in the shared store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("churn")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("churn.role") == "study" and r.data.tags["optuna.study"] == STUDY]
    ids = {p.info.run_id for p in parents}
    return parents, [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]


@pytest.mark.slow
@pytest.mark.postgres
def test_three_clones_one_killed_worker_one_study(cluster, study_storage, tmp_path):
    clones, env, storage = cluster["clones"], cluster["env"], cluster["storage"]
    workers = [start_worker(clone, env, storage, tmp_path) for clone in clones[:3]]  # together
    try:
        started = wait_for_run(study_storage)
        killed = stop_each_mid_trial(workers, study_storage)[2]
        # A worker one commit ahead tries to join the run while it is open: every worker is stopped mid-trial,
        # so no trial can finish or be failed as stale until it has been refused. (Only once the run is
        # recorded: a first worker at another commit would make the run its own, and the others would be the
        # ones refused.)
        late = start_worker(clones[3], env, storage, tmp_path, LATE_FAULTS)
        workers.append(late)
        late.wait(timeout=300)
        # The last worker dies; the two others go on, and the first of them to look fails its trial as stale
        # (its last heartbeat is older than the grace period) and queues it again. Their own trials' heartbeats
        # are as old, but each worker's heartbeat thread writes again the moment it resumes, before its trial
        # can end and look for stale ones.
        os.kill(workers[2].pid, signal.SIGKILL)
        workers[2].wait(timeout=30)
        for worker in workers[:2]:
            os.kill(worker.pid, signal.SIGCONT)
        for worker in workers[:2]:
            worker.wait(timeout=600)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    logs = {clone.name: (tmp_path / f"{clone.name}.log").read_text() for clone in clones[:3]}
    for worker, clone in zip(workers[:2], clones, strict=False):
        assert worker.returncode == 0, logs[clone.name][-3000:]
    assert workers[2].returncode == -signal.SIGKILL

    # The late worker: one line, naming the run's commit and its own.
    head = run(["git", "rev-parse", "HEAD"], clones[0]).stdout.strip()
    ahead = run(["git", "rev-parse", "HEAD"], clones[3]).stdout.strip()
    assert started["commit"] == head and started["target"] == TRIALS
    output = (tmp_path / f"{clones[3].name}.log").read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert late.returncode == 1, output[:3000]
    assert len(errors) == 1 and "Traceback" not in output
    assert errors[0].startswith(f"error: study '{STUDY}' is being tuned at commit {head[:12]}"), errors[0]
    assert f"this worker is at {ahead[:12]}" in errors[0]

    # Optuna: the requested complete trials, unique numbers, the killed trial failed and retried, none left over.
    study = optuna.load_study(study_name=STUDY, storage=study_storage)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert TRIALS <= states.count("COMPLETE") <= TRIALS + 1, states  # +1: two workers asking at the same moment
    assert [t.number for t in trials] == list(range(len(trials)))
    assert states.count("FAIL") == 1 and set(states) == {"COMPLETE", "FAIL"}, states
    failed = study.trials[killed.number]
    assert failed.state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]  # Optuna's retry record
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == killed.params, "the retry runs the killed trial's parameters"
    assert retry[0].user_attrs["worker"] != killed.user_attrs["worker"], "another worker ran the retry"
    assert f"trial {killed.number}: worker {killed.user_attrs['worker']} stopped sending heartbeats" in (
        logs["host-a"] + logs["host-b"]
    )

    # MLflow: one parent; one run per trial under it, by three workers (host and pid tags); none RUNNING.
    parents, runs = mlflow_trial_runs(cluster["tracking"])
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert parents[0].info.status == "FINISHED"
    numbers = [int(r.data.tags["optuna.trial"]) for r in runs]
    assert sorted(numbers) == [t.number for t in trials], "exactly one MLflow run per trial"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    by_number = {int(r.data.tags["optuna.trial"]): r for r in runs}
    lost = by_number[killed.number]
    assert lost.info.status == "FAILED", lost.info.status
    assert lost.data.tags["optuna.state"] == "FAIL"
    assert "stopped sending heartbeats" in lost.data.tags["error"]
    assert lost.data.tags["optuna.worker.pid"] == str(workers[2].pid)
    assert by_number[retry[0].number].data.tags["optuna.retry_of"] == str(killed.number)
    assert all(r.info.status != "RUNNING" for r in runs)
    for trial in trials:
        if trial.state.name == "COMPLETE":
            assert by_number[trial.number].info.status == "FINISHED"
            assert by_number[trial.number].data.metrics["cv_roc_auc"] == trial.value
    pids = {r.data.tags["optuna.worker.pid"] for r in runs}
    assert pids == {str(w.pid) for w in workers[:3]}, "all three workers ran trials"
    assert {r.data.tags["optuna.worker.host"] for r in runs} == {socket.gethostname()}
    assert {r.data.tags["git.commit"] for r in runs} == {head}

    # `make tune APPLY=1` on one of the hosts: a DVC experiment with the best trial's CV score, exactly.
    host = clones[0]
    for name in ("Makefile", "requirements.txt"):  # what a clone of the project has beside the sandbox's files
        shutil.copy2(REPO / name, host / name)
    (host / ".venv").symlink_to(REPO / ".venv")  # as in a clone after `make setup`
    with (host / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n/Makefile\n/requirements.txt\n")
    # `-o .venv/.installed`: the clone's pyproject.toml is newer than the shared venv's install stamp, and `make
    # setup` would re-point the venv's editable install of the package at this clone.
    make = ["make", "-o", ".venv/.installed", "tune", "TRIALS=0", "APPLY=1", f"STORAGE={storage}"]
    applied = run(make, host, env, timeout=900)
    assert str(REPO) in distribution("churn").read_text("direct_url.json"), "the venv's churn moved to a clone"
    name = applied.stdout.strip().splitlines()[-1]
    best = json.loads((host / "tune" / "best_params.json").read_text())
    assert (best["trial"], best["value"]) == (study.best_trial.number, study.best_value)
    found = [e for base in exp_show(host) for e in base.get("experiments") or [] if e.get("name") == name]
    assert found, f"no experiment {name!r} in dvc exp show:\n{applied.stdout[-2000:]}"
    data = found[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["C"] == study.best_params["model.C"]
    assert data["metrics"]["reports/cv_metrics.json"]["data"]["roc_auc"] == study.best_value


# --- the compose stack's tuner service (offline) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def test_compose_tuner_runs_workers_on_the_stack_postgresql_and_mlflow(services):
    tuner, database = services["tuner"], services["optuna-db"]
    assert tuner["profiles"] == ["tune"] and database["profiles"] == ["tune"]  # `docker compose up` alone: no tuner
    assert "ports" not in tuner and tuner["networks"] == ["backend"]
    assert tuner["depends_on"] == {
        "optuna-db": {"condition": "service_completed_successfully"},
        "mlflow": {"condition": "service_healthy"},
    }
    env = tuner["environment"]
    # Optuna has its own database on the stack's server: it and MLflow each keep an `alembic_version` table.
    assert env["OPTUNA_STORAGE"].startswith("postgresql+psycopg2://${POSTGRES_USER:?")
    assert env["OPTUNA_STORAGE"].endswith("@postgres:5432/optuna")
    assert "CREATE DATABASE optuna" in "\n".join(database["command"])
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # The server's admin account from .env (compared, not spelled out: test_compose's secret scan reads this file).
    assert env["MLFLOW_TRACKING_PASSWORD"] == services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["MLFLOW_TRACKING_USERNAME"] == services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"]
    # Each replica is a clone of the mounted repository's commit (read-only) with its featurize outputs.
    assert ".:/repo:ro" in tuner["volumes"]
    script = "\n".join(tuner["command"])
    assert "git clone -q /repo /work" in script
    assert 'bin/py -m churn.tools.tune --no-progress --storage "$$OPTUNA_STORAGE"' in script
    for path in ("data/prepared/train.parquet", "models/preprocessor.pkl"):
        assert path in script
