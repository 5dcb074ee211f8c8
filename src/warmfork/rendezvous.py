"""Where a user's servers and clients meet: a directory that no other user can create, replace or enter,
opened component by component without trusting a symlink another user owns, and files in it opened without
following symlinks and checked on the opened descriptor."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time

MAX_SYMLINKS = 40
WARNING_MEMO_S = 86400.0  # "warned already in this run" notes older than this are removed
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # (a FIFO planted under a name must not block open)


class Doubt(Exception):
    """A reason not to trust the warm path: the stage runs cold, and `topic` keys the once-per-run warning."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(reason)
        self.topic = topic


class Place:
    """An open, verified private directory. Names in it are reached through the descriptor, and sockets
    through /proc/self/fd/<fd>/<name> (which also keeps AF_UNIX paths short)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def shown(self, name: str) -> str:
        return os.path.join(self.path, name)

    def address(self, name: str) -> str:
        return f"/proc/self/fd/{self.fd}/{name}"

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self, name: str, flags: int, truncate: bool = False) -> int:
        """Open (or create, mode 0600) a regular file of this user's, never through a symlink or a hard link."""
        try:
            fd = os.open(name, flags | _FILE, 0o600, dir_fd=self.fd)
        except OSError as exc:
            kind = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise Doubt("files", f"cannot open {self.shown(name)}: {kind}") from None
        info = os.fstat(fd)
        problem = (
            "not a regular file"
            if not stat.S_ISREG(info.st_mode)
            else f"owned by uid {info.st_uid}"
            if info.st_uid != os.getuid()
            else f"linked {info.st_nlink} times"
            if info.st_nlink != 1
            else None
        )
        if problem:
            os.close(fd)
            raise Doubt("files", f"{self.shown(name)} is {problem}")
        if truncate:
            os.ftruncate(fd, 0)
        return fd

    def read(self, name: str) -> str:
        fd = self.open(name, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(4096).decode(errors="replace")

    def write(self, name: str, text: str) -> None:
        fd = self.open(name, os.O_WRONLY | os.O_CREAT, truncate=True)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode())

    def first_warning(self, topic: str) -> bool:
        """True the first time a run (this process group) asks about `topic`: later stages stay quiet."""
        group = os.getpgid(0)
        name = f"warned.{topic}.{group}.{started_since_boot(group) or 0}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE, 0o600, dir_fd=self.fd))
        except FileExistsError:
            return False
        except OSError:
            return True
        self._forget_old_warnings()
        return True

    def _forget_old_warnings(self) -> None:
        now = time.time()
        for name in os.listdir(self.fd):
            info = self.lstat(name) if name.startswith("warned.") else None
            if info is not None and now - info.st_mtime > WARNING_MEMO_S:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.fd)

    def close(self) -> None:
        os.close(self.fd)


def open_private_dir(path: str) -> int:
    """Open `path` as a directory that only this user controls, creating missing components (mode 0700).

    Walked from / with openat, component by component: every directory and symlink on the way must belong to
    root or to this user (so nobody else can rename or replace what follows it), a directory that others may
    write must be sticky, each opened directory must be the one that was checked, and the last one must be
    this user's with mode 0700. Raises Doubt with the first component that fails."""
    uid = os.getuid()
    if not os.path.isabs(path):
        raise Doubt("dir", f"{path} is not an absolute path")
    stack = [os.open("/", _DIR)]
    shown = [""]
    todo = path.split("/")[::-1]
    links = 0
    try:
        _check_dir(os.fstat(stack[0]), "/", uid)
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    shown.pop()
                continue
            here = f"{shown[-1]}/{name}"
            info = _lstat_or_create(stack[-1], name)
            if info.st_uid not in (0, uid):
                raise Doubt("dir", f"{here} belongs to uid {info.st_uid}")
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise Doubt("dir", f"{path}: too many symlinks")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                        shown.pop()
                todo.extend(target.split("/")[::-1])
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise Doubt("dir", f"{here} is not a directory")
            fd = os.open(name, _DIR, dir_fd=stack[-1])
            stack.append(fd)
            shown.append(here)
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise Doubt("dir", f"{here} was replaced while it was checked")
            _check_dir(opened, here, uid)
        final = os.fstat(stack[-1])
        if final.st_uid != uid or final.st_mode & 0o077:
            mode = oct(stat.S_IMODE(final.st_mode))
            raise Doubt("dir", f"{path} must be yours with mode 0700 (it is uid {final.st_uid}'s, mode {mode})")
        return stack.pop()
    except OSError as exc:
        raise Doubt("dir", f"cannot use {path}: {exc.strerror or exc}") from None
    finally:
        for fd in stack:
            os.close(fd)


def _lstat_or_create(parent: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        return os.stat(name, dir_fd=parent, follow_symlinks=False)


def _check_dir(info: os.stat_result, shown: str, uid: int) -> None:
    if info.st_uid not in (0, uid):
        raise Doubt("dir", f"{shown} belongs to uid {info.st_uid}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise Doubt("dir", f"{shown} is writable by other users and not sticky")


def candidates() -> list[str]:
    """WARMFORK_DIR if set (and then only it); else $XDG_RUNTIME_DIR/warmfork, the user's cache directory
    ($XDG_CACHE_HOME or ~/.cache)/warmfork, and the virtual environment's .warmfork, in that order."""
    explicit = os.environ.get("WARMFORK_DIR")
    if explicit:
        return [explicit]
    found = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        found.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "warmfork"))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    found.append(os.path.join(cache, "warmfork"))
    if sys.prefix != sys.base_prefix:
        found.append(os.path.join(sys.prefix, ".warmfork"))
    return found


def locate() -> Place:
    """The first candidate directory that passes open_private_dir, or Doubt naming why each failed."""
    reasons = []
    for path in candidates():
        try:
            return Place(path, open_private_dir(path))
        except Doubt as doubt:
            reasons.append(str(doubt))
    raise Doubt("dir", "no private directory for the server: " + "; ".join(reasons))


def warn(doubt: Doubt, place: Place | None = None) -> None:
    """Say once per run (process group) why a stage runs cold: one line on stderr. Without a usable place
    (the doubt is about WARMFORK_DIR itself) the note is kept in a default place, if one is usable."""
    own = None
    if place is None:
        saved = os.environ.pop("WARMFORK_DIR", None)
        try:
            own = place = locate()
        except Doubt:
            pass
        finally:
            if saved is not None:
                os.environ["WARMFORK_DIR"] = saved
    try:
        quiet = place is not None and not place.first_warning(doubt.topic)
    finally:
        if own is not None:
            own.close()
    if not quiet:
        sys.stderr.write(f"warmfork: running cold: {doubt}\n")
        sys.stderr.flush()


def started_since_boot(pid: int | str = "self") -> float | None:
    """When a process started, in seconds since boot (CLOCK_BOOTTIME, clock-tick resolution), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
