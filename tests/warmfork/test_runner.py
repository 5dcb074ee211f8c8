"""warmfork with real processes: a server that warms up, forks and reports; clients that hand it their
descriptors, directory and environment; the caller's settings; signals; one fate; the cold fallback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.warmfork.helpers import alive, wait_until, warnings


def test_cold_then_warm_runs_look_the_same_to_the_module(runner, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cold = runner.client("a", "b c", cwd=work, PROBE_VAR="1", PROBE_EXIT="3")
    assert cold.returncode == 3, cold.stderr
    first = json.loads(cold.stdout)
    assert first["caller"] is None  # no server yet: run cold, and start one in the background
    runner.start()

    hot = subprocess.Popen(
        [sys.executable, "-m", "warmfork", "-m", "probe", "a", "b c"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**runner.env, "PROBE_VAR": "1", "PROBE_EXIT": "3"},
        cwd=work,
        text=True,
    )
    out, err = hot.communicate("hello\n", timeout=60)
    assert hot.returncode == 3, err
    second = json.loads(out)
    client_pid, client_started, own_pid = second["caller"].split(":")
    assert int(client_pid) == hot.pid and int(own_pid) == second["pid"] != hot.pid
    assert 0 < float(client_started) <= time.clock_gettime(time.CLOCK_BOOTTIME)
    for key in ("argv", "cwd", "stdin", "var", "umask", "nice", "optimize", "nofile", "cgroup", "orig_argv"):
        assert second[key] == first[key], key
    assert err.strip().endswith("to stderr") and not warnings(err)
    # the server's copy of the caller's own package is dropped; what it loaded from site-packages is kept
    assert second["loaded"] == {"yaml": True, "projpkg": False} and second["projpkg"] == "as in the file"
    assert "probe runs in" in runner.log() and "status 768" in runner.log()  # exit 3, as waitpid reports it


def test_start_waits_until_the_server_answers_and_stop_ends_it(runner):
    pid = runner.start()
    assert alive(pid) and list(runner.directory.glob("*.sock"))
    assert runner.status()["dir"] == str(runner.directory)
    runner.cli("--stop")
    wait_until(lambda: not alive(pid), "the server did not stop")
    assert not list(runner.directory.glob("*.sock")) and "exits" in runner.log()


def test_stop_ends_this_environments_server_and_stop_all_every_one(runner):
    mine = runner.start()
    other = runner.start(OMP_NUM_THREADS="7")  # another key: another server (7: not what a test may have set)
    assert mine != other
    runner.cli("--stop")
    wait_until(lambda: not alive(mine), "--stop did not stop this environment's server")
    assert alive(other)
    runner.cli("--stop", "--all")
    wait_until(lambda: not alive(other), "--stop --all did not stop the other server")


def test_stopping_the_server_lets_a_running_module_finish_and_report(runner, tmp_path):
    runner.start()
    stage = runner.sleeping(tmp_path / "running", "2", PROBE_EXIT="5")
    runner.cli("--stop")
    out, err = stage.communicate(timeout=60)
    assert stage.returncode == 5, err
    assert json.loads(out)["caller"]
    wait_until(lambda: not list(runner.directory.glob("*.sock")), "the server kept listening after --stop")


def test_what_a_fork_would_inherit_selects_another_server(runner, tmp_path):
    def key(*prefix: str, options: tuple[str, ...] = (), **extra: str) -> str:
        cmd = [*prefix, sys.executable, *options, "-m", "warmfork", "--status"]
        found = subprocess.run(cmd, env={**runner.env, **extra}, capture_output=True, text=True, check=True)
        return json.loads(found.stdout)["key"]

    base = key()
    assert base == key(PROBE_VAR="x", DVC_ROOT="/elsewhere", PYTHONPATH=runner.env["PYTHONPATH"] + ":/nowhere")
    assert base != key(OMP_NUM_THREADS="7")
    assert base != key(PYTHONHASHSEED="0")
    assert base != key(PYTHONOPTIMIZE="1")
    assert base != key(options=("-O",))
    assert base != key("nice", "-n", "3")
    assert base != key("prlimit", "--nofile=512:512")
    assert base != key(MY_LIB_THREADS="2", WARMFORK_KEY_ENV="MY_LIB_")
    assert key(MY_LIB_THREADS="2") == base  # not named by WARMFORK_KEY_ENV
    edited = tmp_path / "warmup2.py"
    edited.write_text((runner.modules / "warmup.py").read_text() + "\n# edited\n")
    assert base != key(WARMFORK_WARMUP=str(edited))


def test_the_module_runs_with_the_callers_nice_limits_and_flags_warm_or_cold(runner):
    prefix = ["nice", "-n", "7", "prlimit", "--nofile=512:512"]
    cmd = [*prefix, sys.executable, "-O", "-m", "warmfork", "-m", "probe"]
    env = {**runner.env, "PYTHONWARNINGS": "ignore::DeprecationWarning"}

    def probe():
        found = subprocess.run(cmd, input="x\n", env=env, cwd=runner.modules, capture_output=True, text=True)
        assert found.returncode == 0, found.stderr
        return json.loads(found.stdout), found.stderr

    cold, _ = probe()
    wait_until(lambda: list(runner.directory.glob("*.sock")), "the client did not start a server", limit_s=60)
    warm, err = probe()
    assert cold["caller"] is None and warm["caller"], err
    for found in (cold, warm):
        assert (found["nice"], found["nofile"], found["optimize"]) == (7, 512, 1)
        assert found["orig_argv"][1:3] == ["-O", "-m"]
    assert warm["cgroup"] == cold["cgroup"]


def test_a_server_whose_settings_changed_runs_modules_cold_saying_so_once(runner):
    server = runner.start()
    os.setpriority(os.PRIO_PROCESS, server, 5)  # the server now differs from its clients
    script = f"{sys.executable} -m warmfork -m probe </dev/null; {sys.executable} -m warmfork -m probe </dev/null"
    run = subprocess.run(
        ["sh", "-c", script], env=runner.env, cwd=runner.modules, capture_output=True, text=True, start_new_session=True
    )
    assert run.returncode == 0, run.stderr
    reports = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["caller"] for r in reports] == [None, None] and all(r["nice"] == 0 for r in reports)
    said = warnings(run.stderr)
    assert len(said) == 1 and "nice '0' != '5'" in said[0], run.stderr  # once per run (process group)


def test_signals_reach_the_module_and_a_vanished_client_takes_it_along(runner, tmp_path):
    runner.start()
    interrupted = runner.sleeping(tmp_path / "m1")
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 128 + signal.SIGINT and "KeyboardInterrupt" in err

    terminated = runner.sleeping(tmp_path / "m2")
    terminated.send_signal(signal.SIGTERM)
    terminated.communicate(timeout=60)
    assert terminated.returncode == 128 + signal.SIGTERM

    orphaned = runner.sleeping(tmp_path / "m3")
    module = _module_pid(runner, index=2)
    orphaned.kill()
    orphaned.communicate(timeout=60)
    killed = time.monotonic()
    wait_until(lambda: not alive(module), f"module {module} outlived its client", limit_s=5)
    assert time.monotonic() - killed < 1.0


def test_a_killed_server_takes_its_running_module_along_and_the_client_reports_it(runner, tmp_path):
    server = runner.start()
    stage = runner.sleeping(tmp_path / "running")
    module = _module_pid(runner, index=0)
    os.kill(server, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not alive(module), "the module outlived its server", limit_s=5)
    assert time.monotonic() - killed < 1.0
    _, err = stage.communicate(timeout=30)
    assert stage.returncode == 1 and "the warm server" in err and "exited" in err


def _module_pid(runner, index: int) -> int:
    """The pid of the index-th module the server started (from its log)."""
    found = []

    def logged() -> bool:
        found[:] = [line for line in runner.log().splitlines() if " runs in " in line]
        return len(found) > index

    wait_until(logged, "the server did not log the module")
    return int(found[index].split(" runs in ", 1)[1].split()[0])


def test_turned_off_it_runs_cold_silently_and_starts_nothing(runner):
    off = runner.client(WARMFORK="0")
    assert off.returncode == 0 and json.loads(off.stdout)["caller"] is None and not warnings(off.stderr)
    time.sleep(0.5)
    assert not list(runner.directory.iterdir())


def test_a_directory_others_may_enter_is_refused_once_per_run_and_nothing_is_created(runner, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    script = f"{sys.executable} -m warmfork -m probe </dev/null; {sys.executable} -m warmfork -m probe </dev/null"
    env = {**runner.env, "WARMFORK_DIR": str(shared)}
    run = subprocess.run(["sh", "-c", script], env=env, cwd=runner.modules, capture_output=True, text=True)
    assert run.returncode == 0 and all(json.loads(line)["caller"] is None for line in run.stdout.splitlines())
    said = warnings(run.stderr)
    assert len(said) == 1 and "mode 0700" in said[0], run.stderr
    time.sleep(0.5)
    assert not list(shared.iterdir()) and not list(runner.directory.iterdir())


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_other_platforms_run_cold_with_a_reason(monkeypatch, platform):
    from warmfork import client
    from warmfork.rendezvous import Doubt

    monkeypatch.setattr(sys, "platform", platform)
    with pytest.raises(Doubt, match=f"need Linux.*this is {platform}") as raised:
        client.Environment()
    assert raised.value.topic == "platform"
