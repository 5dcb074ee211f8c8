"""The few operating-system helpers every layer uses, written once: file hashes as DVC records them,
atomic file writes, running git or DVC (this interpreter's DVC, never whatever `dvc` is on PATH), the dvc.lock
a killed DVC leaves behind, and whether a process that logged something is still alive."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from churn.errors import ChurnError

log = logging.getLogger(__name__)


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
    """This interpreter's DVC (`python -m dvc`), after checking the repository's dvc.lock (check_dvc_lock)."""
    check_dvc_lock(cwd)
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=check)


_lock_checked: set[Path] = set()


def check_dvc_lock(root: str | Path | None = None) -> str | None:
    """Catch the dvc.lock a killed DVC leaves behind: DVC 3.67 rewrites it in place, so a kill at the wrong
    moment leaves it empty (or cut short), and every later DVC command fails with "'./dvc.lock' validation
    failed". Empty: it held nothing, so git's copy is restored (`git checkout dvc.lock`; the empty file is
    removed when git has none) and the line saying so is returned. Not a valid lock file: a one-line
    ChurnError saying how to recover. None when dvc.lock is valid or absent. Checked once per process."""
    path = (Path(root) if root else Path.cwd()).resolve() / "dvc.lock"
    if path in _lock_checked:
        return None
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChurnError(f"{path}: cannot be read ({first_line(exc)})") from None
    if not text.strip():
        if git("ls-files", "--error-unmatch", "dvc.lock", cwd=path.parent, check=False) is not None:
            git("checkout", "--", "dvc.lock", cwd=path.parent)
            done = "restored the committed copy (git checkout dvc.lock)"
        else:
            path.unlink()
            done = "removed it (git has no copy); DVC re-runs or restores every stage"
        message = f"{path.name} was empty (a DVC run was killed while rewriting it); {done}"
        log.warning(message)
        _lock_checked.add(path)
        return message
    import voluptuous
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from ruamel.yaml import YAML, YAMLError

    try:
        COMPILED_LOCKFILE_SCHEMA(YAML(typ="safe").load(text))
    except (YAMLError, voluptuous.Invalid) as exc:
        raise ChurnError(
            f"{path.name}: not a valid DVC lock file ({first_line(exc)}); a DVC run killed while rewriting it "
            "leaves it cut short: restore the committed one with `git checkout dvc.lock`, then run again"
        ) from None
    _lock_checked.add(path)
    return None


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


def boot_id() -> str:
    """This boot's id (Linux), so that a pid recorded before a reboot is never taken for a live process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int | str) -> tuple[str, float] | None:
    """A process's state letter and start (seconds since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_started(pid: int | str = "self") -> float | None:
    """When a process started, in seconds since boot (clock-tick resolution); None if unknown."""
    found = _stat(pid)
    return found[1] if found else None


def process_alive(pid: int, started: float | None = None) -> bool | None:
    """Whether process `pid` runs (a zombie does not) and, when `started` (as process_started gives it) is
    known, is the process that started then, not a later one given the same pid. None when this system has no
    /proc to tell."""
    if not Path("/proc/self/stat").exists():
        return None
    found = _stat(pid)
    if found is None or found[0] in ("Z", "X"):
        return False
    return started is None or abs(found[1] - started) < 0.05


def remove_stale_dirs(pattern: str, root: str | Path = ".") -> list[Path]:
    """Remove the directories matching `pattern` whose name ends in `-<pid>` of a process that is gone (the
    staging folders of a stage that was killed); returns them."""
    import shutil

    removed = []
    for path in sorted(Path(root).glob(pattern)):
        pid = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)) is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
