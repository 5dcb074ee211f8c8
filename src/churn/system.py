"""The few operating-system helpers every layer uses, written once: file hashes as DVC records them,
atomic file writes, and running git or DVC (this interpreter's DVC, never whatever `dvc` is on PATH)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from churn.errors import ChurnError


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes: the same hash DVC 3 records for it in dvc.lock and .dvc pointers."""
    digest = hashlib.md5()  # noqa: S324 - content addressing, as DVC does
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combined_md5(paths: list[str | Path]) -> str:
    """One hash for several input files (order-independent)."""
    if len(paths) == 1:
        return file_md5(paths[0])
    digest = hashlib.md5()  # noqa: S324
    for path in sorted(map(str, paths)):
        digest.update(f"{path}:{file_md5(path)}\n".encode())
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed onto `path` only if the block succeeds, so a
    reader never sees half a file and a failure leaves the old file (or none) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield staged
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error (or its type's name): what a one-line message quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run(
    command: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with its output captured; with `check`, a failure is one ChurnError line."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise ChurnError(f"{' '.join(command[:3])} failed{f' in {cwd}' if cwd else ''}: {last[0][-300:]}")
    return result


def git(*args: str, cwd: str | Path | None = None, check: bool = True) -> str | None:
    """`git ARGS` -> stdout stripped; None when it fails and `check` is off (or git is missing)."""
    try:
        result = run(["git", *args], cwd=cwd, check=check)
    except OSError:
        if check:
            raise ChurnError("git not found on PATH") from None
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def dvc(
    *args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """This interpreter's DVC (`python -m dvc`)."""
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=check)


def caller_process() -> tuple[int, float] | None:
    """The process that stands for this one: when a fork server ran this process on behalf of a client
    (it sets WARMFORK_CALLER=<client pid>:<client start since boot>:<this pid>), that client's pid and
    start; the variable is ignored when inherited by any other process. None when run directly."""
    try:
        pid, started, child = os.environ.get("WARMFORK_CALLER", "").split(":")
        return (int(pid), float(started)) if int(child) == os.getpid() else None
    except ValueError:
        return None


def process_age() -> float | None:
    """Seconds since this process (or, under a fork server, its client) started; None off Linux."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        origin = caller_process()
        if origin:
            return uptime - origin[1]
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
