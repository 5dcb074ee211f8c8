"""Helpers for warmfork's tests: a private server directory, a probe module and a tiny warm-up, so the
tests depend on nothing of the churn project."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Reports what the module can see of its process; `sleep MARKER [S]` then creates MARKER and sleeps.
PROBE = """
import json, os, resource, sys, time
loaded = {name: name in sys.modules for name in ("yaml", "projpkg")}
import projpkg
if __name__ == "__main__":
    line = sys.stdin.readline().strip()
    print(json.dumps({
        "argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": line, "var": os.environ.get("PROBE_VAR"),
        "umask": oct(os.umask(0o022)), "caller": os.environ.get("WARMFORK_CALLER"), "pid": os.getpid(),
        "ppid": os.getppid(), "nice": os.getpriority(os.PRIO_PROCESS, 0), "optimize": sys.flags.optimize,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "cgroup": open("/proc/self/cgroup").read(),
        "loaded": loaded, "projpkg": projpkg.VALUE, "orig_argv": sys.orig_argv,
    }), flush=True)
    print("to stderr", file=sys.stderr)
    if sys.argv[1:2] == ["sleep"]:
        open(sys.argv[2], "w").close()
        time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""
# The server loads a site-packages module (kept in forked processes) and the caller's own package (dropped).
WARMUP = """
import yaml
import projpkg
projpkg.VALUE = "changed in the server"
"""


class Runner:
    """A private WARMFORK_DIR, a directory holding the probe module, and the environment that uses both."""

    def __init__(self, directory: Path, modules: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.modules = modules
        self.env = env

    def client(self, *args: str, cwd: Path | None = None, stdin: str = "hello\n", **extra: str):
        """`python -m warmfork -m probe ARGS` in a session of its own (warnings are once per process group)."""
        return subprocess.run(
            [sys.executable, "-m", "warmfork", "-m", "probe", *args],
            input=stdin,
            env={**self.env, **extra},
            cwd=cwd or self.modules,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )

    def cli(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "warmfork", *args]
        return subprocess.run(cmd, env={**self.env, **extra}, capture_output=True, text=True, check=check, timeout=120)

    def status(self, **extra: str) -> dict:
        return json.loads(self.cli("--status", **extra).stdout)

    def start(self, **extra: str) -> int:
        started = self.cli("--start", check=False, **extra)
        assert started.returncode == 0, started.stderr
        return self.status(**extra)["pid"]

    def sleeping(self, marker: Path, *args: str, **extra: str) -> subprocess.Popen:
        """A probe that sleeps (60 s, or args[0]) once it has created `marker`; returned when it runs."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "warmfork", "-m", "probe", "sleep", str(marker), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.env, **extra},
            cwd=self.modules,
            text=True,
            start_new_session=True,
        )
        proc.stdin.write("x\n")
        proc.stdin.flush()
        wait_until(marker.exists, "the module never started", limit_s=60)
        return proc

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.directory.glob("*.log")))


def write_probe(modules: Path) -> None:
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "probe.py").write_text(PROBE)
    (modules / "projpkg").mkdir(exist_ok=True)
    (modules / "projpkg" / "__init__.py").write_text('VALUE = "as in the file"\n')
    (modules / "warmup.py").write_text(WARMUP)


def runner_env(directory: Path, modules: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARMFORK", "PYTHON", "XDG_"))}
    env.update(
        WARMFORK_DIR=str(directory),
        WARMFORK_IDLE="60",
        WARMFORK_WARMUP=str(modules / "warmup.py"),
        PYTHONPATH=f"{SRC}{os.pathsep}{modules}",
        XDG_CACHE_HOME=str(home / "cache"),  # where a warning about WARMFORK_DIR itself is remembered
    )
    return env


def stop_all(env: dict[str, str], directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "warmfork", "--stop", "--all"], env=env, capture_output=True, check=False)
    for _ in range(100):
        if not any(listening(path) for path in directory.glob("*.sock")):
            break
        time.sleep(0.1)
    shutil.rmtree(directory, ignore_errors=True)


def listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def wait_until(condition, message: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie, or a process reaped between the two looks, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warmfork: running cold:")]
