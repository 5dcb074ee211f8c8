"""Real `dvc repro` of a tiny project whose stages are probe modules run through a bin/py-like launcher:
every stage process runs at the caller's nice value, warm or cold; killing the server (or the client)
during a stage stops the stage within a second, DVC fails it, and its MLflow run is not FINISHED."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.warmfork.helpers import SRC, alive, stop_all, wait_until

pytestmark = pytest.mark.slow

# A stage: says where it runs (pid), waits for the test's go, then writes its output. `train` first starts
# an MLflow run.
STAGE = """
import json, os, sys, time
name, control = sys.argv[1], os.environ["PROBE_CONTROL"]
if name == "train":
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{control}/mlflow.db")
    run = mlflow.start_run()
    with open(f"{control}/train.run", "w") as handle:
        handle.write(run.info.run_id)
with open(f"{control}/{name}.tmp", "w") as handle:
    handle.write(f"{os.getpid()} {os.environ.get('WARMFORK_CALLER', '-')}")
os.replace(f"{control}/{name}.tmp", f"{control}/{name}.pid")
deadline = time.monotonic() + 120
while not os.path.exists(f"{control}/{name}.go"):
    if time.monotonic() > deadline:
        sys.exit(f"{name}: no go from the test")
    time.sleep(0.02)
os.makedirs("out", exist_ok=True)
with open(f"out/{name}.json", "w") as handle:
    json.dump({"caller": os.environ.get("WARMFORK_CALLER"), "nice": os.getpriority(os.PRIO_PROCESS, 0)}, handle)
"""
WARMUP = """
import os
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # else MLflow starts a thread at import
import mlflow
"""
PIPELINE = """
stages:
  first:
    cmd: bin/run stage first
    outs: [out/first.json]
  second:
    cmd: bin/run stage second
    deps: [out/first.json]
    outs: [out/second.json]
  third:
    cmd: bin/run stage third
    deps: [out/second.json]
    outs: [out/third.json]
  train:
    cmd: bin/run stage train
    outs: [out/train.json]
"""


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "bin").mkdir(parents=True)
    (root / "stages").mkdir()
    (root / "stages" / "stage.py").write_text(STAGE)
    (root / "warmup.py").write_text(WARMUP)
    (root / "dvc.yaml").write_text(PIPELINE)
    launcher = root / "bin" / "run"  # as bin/py: the module runs through warmfork
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH="{SRC}:$(pwd)/stages" exec {sys.executable} -m warmfork -m "$@"\n')
    launcher.chmod(0o755)
    control = tmp_path / "control"
    control.mkdir()
    directory = Path(tempfile.mkdtemp(prefix="wf-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARMFORK", "PYTHON", "DVC_", "MLFLOW_"))}
    env.update(
        WARMFORK_DIR=str(directory),
        WARMFORK_IDLE="60",
        WARMFORK_WARMUP=str(root / "warmup.py"),
        PROBE_CONTROL=str(control),
        PYTHONPATH=f"{SRC}:{root / 'stages'}",
    )
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=root, env=env, check=True)
    yield root, control, directory, env
    stop_all(env, directory)


def end_group(proc: subprocess.Popen) -> None:
    """Kill what is left of a `dvc repro` (a failed test must not leave stages waiting)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def nice_of(pid: int) -> int:
    return int(subprocess.run(["ps", "-o", "ni=", "-p", str(pid)], capture_output=True, text=True).stdout)


def server_pid(directory: Path) -> int | None:
    """The pid of the server listening in `directory` (from its lock), once one listens."""
    sockets = list(directory.glob("*.sock"))
    return int(directory.joinpath(sockets[0].name.replace(".sock", ".lock")).read_text()) if sockets else None


def test_nice_7_dvc_repro_runs_every_stage_at_nice_7_warm_or_cold(project):
    root, control, directory, env = project
    repro = subprocess.Popen(
        ["nice", "-n", "7", sys.executable, "-m", "dvc", "repro", "-f", "third"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # (so that the test can end DVC, its shells and clients together)
    )
    try:
        for name in ("first", "second", "third"):
            pid_file = control / f"{name}.pid"
            wait_until(pid_file.exists, f"stage {name} did not start", limit_s=120)
            assert nice_of(int(pid_file.read_text().split()[0])) == 7, name
            if name == "first":  # cold; its client started a server, at its nice value: the next stages fork
                wait_until(lambda: server_pid(directory), "no server started", limit_s=120)
                assert nice_of(server_pid(directory)) == 7
            (control / f"{name}.go").touch()
        out, _ = repro.communicate(timeout=120)
    finally:
        end_group(repro)
    assert repro.returncode == 0, out
    outputs = {n: json.loads((root / "out" / f"{n}.json").read_text()) for n in ("first", "second", "third")}
    assert [o["nice"] for o in outputs.values()] == [7, 7, 7]
    assert outputs["first"]["caller"] is None and outputs["second"]["caller"] and outputs["third"]["caller"]


@pytest.mark.parametrize("victim", ["server", "client"])
def test_killing_the_server_or_client_during_train_stops_it_and_dvc_and_mlflow_agree(project, victim):
    root, control, directory, env = project
    started = subprocess.run([sys.executable, "-m", "warmfork", "--start"], cwd=root, env=env, capture_output=True)
    assert started.returncode == 0, started.stderr
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "train"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # (so that the test can end DVC, its shells and clients together)
    )
    try:
        wait_until((control / "train.pid").exists, "train did not start", limit_s=120)
        stage, caller = (control / "train.pid").read_text().split()
        stage, client = int(stage), int(caller.split(":")[0])  # (the process DVC started)
        os.kill(server_pid(directory) if victim == "server" else client, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: not alive(stage), f"the stage outlived its {victim}", limit_s=5)
        assert time.monotonic() - killed < 1.0
        out, _ = repro.communicate(timeout=120)
    finally:
        end_group(repro)
    assert repro.returncode != 0 and "failed to reproduce 'train'" in out, out
    assert not (root / "out" / "train.json").exists()
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{control}/mlflow.db").get_run((control / "train.run").read_text())
    assert run.info.status != "FINISHED"
