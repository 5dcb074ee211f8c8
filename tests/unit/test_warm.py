"""The warm stage runner (churn.warm) with real processes: a server that preloads, forks and reports; clients
that hand it their descriptors, directory and environment; signals; fallback to the cold way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from churn import warm

SRC = Path(warm.__file__).resolve().parents[1]

PROBE = """
import json, os, sys, time
if __name__ == "__main__":
    line = sys.stdin.readline().strip()
    print(json.dumps({
        "argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": line, "var": os.environ.get("PROBE_VAR"),
        "umask": oct(os.umask(0o022)), "warm": "CHURN_WARM_CLIENT" in os.environ,
        "ppid": os.getppid(), "churn": [m for m in sys.modules if m == "churn" or m.startswith("churn.")],
    }))
    print("to stderr", file=sys.stderr)
    if sys.argv[1:2] == ["sleep"]:
        open(sys.argv[2], "w").close()
        time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture
def runtime(tmp_path):
    """A private server directory (short: AF_UNIX paths are limited) and a module to run."""
    directory = Path(tempfile.mkdtemp(prefix="cw-"))
    (tmp_path / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "PYTHONPATH"))}
    env.update(CHURN_WARM_DIR=str(directory), PYTHONPATH=f"{SRC}{os.pathsep}{tmp_path}", CHURN_WARM_IDLE="60")
    yield directory, env, tmp_path
    warm_cli(env, "--stop", check=False)
    for _ in range(100):
        if not list(directory.glob("*.sock")):
            break
        time.sleep(0.1)


def client(env, cwd, *args, stdin="hello\n", **extra):
    return subprocess.run(
        [sys.executable, "-m", "churn.warm", "-m", "probe", *args],
        input=stdin,
        env={**env, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def warm_cli(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m churn.warm --start` / `--stop` in the test's environment."""
    cmd = [sys.executable, "-m", "churn.warm", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check)


def wait_until(condition, message: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def sleeping_stage(env, cwd: Path, marker: Path, *args: str) -> subprocess.Popen:
    """A warm probe that sleeps (60 s, or args[0]) once it has created `marker`; returned when it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "churn.warm", "-m", "probe", "sleep", str(marker), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        text=True,
    )
    proc.stdin.write("x\n")
    proc.stdin.flush()
    wait_until(marker.exists, "the stage never started", limit_s=60)
    return proc


def wait_for_server(directory: Path, limit_s: float = 120) -> Path:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sockets = list(directory.glob("*.sock"))
        if sockets:
            return sockets[0]
        time.sleep(0.2)
    logs = "\n".join(p.read_text() for p in directory.glob("*.log"))
    raise AssertionError(f"no server came up in {limit_s} s; logs:\n{logs}")


def test_cold_then_warm_runs_are_the_same_process_as_far_as_the_module_can_tell(runtime, tmp_path):
    directory, env, _ = runtime
    work = tmp_path / "work"
    work.mkdir()
    cold = client(env, work, "a", "b c", PROBE_VAR="1", PROBE_EXIT="3")
    assert cold.returncode == 3, cold.stderr
    first = json.loads(cold.stdout)
    assert not first["warm"]  # no server yet: run the cold way, and start one in the background
    wait_for_server(directory)

    hot = client(env, work, "a", "b c", PROBE_VAR="1", PROBE_EXIT="3")
    assert hot.returncode == 3, hot.stderr
    second = json.loads(hot.stdout)
    assert second["warm"], hot.stderr
    assert second["ppid"] != os.getpid()  # forked by the server, not a child of this test
    for key in ("argv", "cwd", "stdin", "var", "umask"):
        assert second[key] == first[key], key
    assert second["churn"] == []  # the server's own churn modules are dropped: the checkout's code runs
    assert hot.stderr.strip().endswith("to stderr")
    log = next(directory.glob("*.log")).read_text()
    assert "stage probe in" in log and "status 768" in log  # exit 3, as waitpid reports it


def test_start_waits_until_the_server_accepts_and_stop_ends_it(runtime):
    directory, env, _ = runtime
    started = warm_cli(env, "--start", check=False)
    assert started.returncode == 0, started.stderr
    assert list(directory.glob("*.sock")) and "ready" in started.stderr
    warm_cli(env, "--stop")
    wait_until(lambda: not list(directory.glob("*.sock")), "the server did not stop")
    assert "exits" in next(directory.glob("*.log")).read_text()


def test_stopping_the_server_lets_a_running_stage_finish_and_report(runtime, tmp_path):
    directory, env, _ = runtime
    warm_cli(env, "--start")
    stage = sleeping_stage({**env, "PROBE_EXIT": "5"}, tmp_path, tmp_path / "running", "3")
    warm_cli(env, "--stop")
    out, err = stage.communicate(timeout=60)
    assert stage.returncode == 5, err
    assert json.loads(out)["warm"]
    wait_until(lambda: not list(directory.glob("*.sock")), "the server kept listening after --stop")


def test_the_environment_libraries_read_at_import_selects_another_server(runtime):
    _, env, _ = runtime
    key = lambda **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", "from churn import warm; print(warm.server_key())"],
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert key() == key(PROBE_VAR="x", DVC_ROOT="/elsewhere", PYTHONPATH=f"{SRC}")
    assert key() != key(OMP_NUM_THREADS="1")
    assert key() != key(PYTHONHASHSEED="0")
    limited = subprocess.run(  # a stage would inherit the server's limits, so another limit is another server
        ["sh", "-c", f"ulimit -n 512 && {sys.executable} -c 'from churn import warm; print(warm.server_key())'"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert limited and limited != key()


def test_signals_reach_the_stage_and_a_vanished_client_stops_it(runtime, tmp_path):
    directory, env, _ = runtime
    client(env, tmp_path)
    wait_for_server(directory)

    interrupted = sleeping_stage(env, tmp_path, tmp_path / "m1")
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 128 + signal.SIGINT and "KeyboardInterrupt" in err

    terminated = sleeping_stage(env, tmp_path, tmp_path / "m2")
    terminated.send_signal(signal.SIGTERM)
    terminated.communicate(timeout=60)
    assert terminated.returncode == 128 + signal.SIGTERM

    orphaned = sleeping_stage(env, tmp_path, tmp_path / "m3")
    stage_pid = _stage_pid(directory, index=2)
    orphaned.kill()
    orphaned.communicate(timeout=60)
    wait_until(lambda: not _alive(stage_pid), f"stage {stage_pid} outlived its client")


def _stage_pid(directory: Path, index: int) -> int:
    """The pid of the index-th stage the server started (from its log)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in next(directory.glob("*.log")).read_text().splitlines() if " runs in " in line]
        if len(lines) > index:
            return int(lines[index].split(" runs in ", 1)[1].split()[0])
        time.sleep(0.1)
    raise AssertionError("the server did not log the stage")


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie, or a process reaped between the two looks, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_turned_off_or_without_a_usable_directory_it_runs_cold_and_starts_nothing(runtime, tmp_path):
    directory, env, _ = runtime
    off = client(env, tmp_path, CHURN_WARM="0")
    assert off.returncode == 0 and not json.loads(off.stdout)["warm"]
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)  # others may enter: not ours to trust
    unsafe = client(env, tmp_path, CHURN_WARM_DIR=str(shared))
    assert unsafe.returncode == 0 and not json.loads(unsafe.stdout)["warm"]
    time.sleep(1)
    assert not list(directory.iterdir()) and not list(shared.iterdir())


def test_process_origin_only_applies_to_the_process_it_names(monkeypatch):
    monkeypatch.setenv("CHURN_WARM_CLIENT", f"123:45.5:{os.getpid()}")
    assert warm.process_origin() == (123, 45.5)
    monkeypatch.setenv("CHURN_WARM_CLIENT", f"123:45.5:{os.getpid() + 1}")  # inherited by a subprocess
    assert warm.process_origin() is None
    started = warm.started_since_boot()
    assert started is not None and 0 < time.clock_gettime(time.CLOCK_BOOTTIME) - started < 3600
