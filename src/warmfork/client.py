"""The client side: hand `python -m MODULE ARGS` to this user's server for this environment, or run it cold
(exec of `python -m MODULE ARGS`) whenever that cannot be done safely before the module has started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import struct
import sys

from warmfork import rendezvous, settings
from warmfork.rendezvous import Doubt, Place

REPLY_TIMEOUT_S = 10.0
FAILED_RETRY_S = 600.0
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def enabled() -> bool:
    return os.environ.get("WARMFORK", "1") != "0"


def unsupported() -> str | None:
    """Why this platform cannot run a module warm safely, or None."""
    if not sys.platform.startswith("linux"):
        return f"warm runs need Linux (SO_PEERCRED, PR_SET_PDEATHSIG, pidfd, /proc); this is {sys.platform}"
    if not all(hasattr(os, name) for name in ("fork", "pidfd_open")) or not hasattr(socket, "SO_PEERCRED"):
        return "this Python lacks os.fork, os.pidfd_open or SO_PEERCRED"
    return None


class Environment:
    """The server this process should use: its key and the private directory it listens in."""

    def __init__(self) -> None:
        reason = unsupported()
        if reason:
            raise Doubt("platform", reason)
        try:
            self.warmup_path, warmup = settings.read_warmup()
        except OSError as exc:
            raise Doubt("warmup", f"WARMFORK_WARMUP: {exc.strerror}: {exc.filename}") from None
        self.settings = settings.process_settings()
        self.key = settings.key(settings.key_parts(warmup, self.settings))
        self.place = rendezvous.locate()

    def name(self, suffix: str) -> str:
        return f"{self.key}.{suffix}"


def connect(place: Place, key: str) -> tuple[socket.socket, int] | None:
    """A connection to this user's server for `key` and the server's pid; None if none listens. Doubt if
    the socket is not this user's or the process answering on it is not."""
    name = f"{key}.sock"
    info = place.lstat(name)
    if info is None:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        raise Doubt("server", f"{place.shown(name)} is not a socket of yours (uid {info.st_uid})")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(REPLY_TIMEOUT_S)
    try:
        conn.connect(place.address(name))
    except (ConnectionRefusedError, FileNotFoundError):
        conn.close()
        return None  # a server that exited without removing its socket
    except OSError as exc:
        conn.close()
        raise Doubt("server", f"cannot connect to {place.shown(name)}: {exc}") from None
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        conn.close()
        raise Doubt("server", f"{place.shown(name)} is answered by uid {uid}, not by you (uid {os.getuid()})")
    return conn, pid


def request(conn: socket.socket, message: dict, fds: list[int] | None = None) -> dict | None:
    data = json.dumps(message).encode() + b"\n"
    sent = socket.send_fds(conn, [data], fds) if fds else 0
    conn.sendall(data[sent:])
    return read_message(conn, bytearray())


def read_message(conn: socket.socket, buffer: bytearray) -> dict | None:
    """The next newline-terminated JSON message, or None at end of stream."""
    while b"\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def cold(module: str, args: list[str]) -> None:
    """Run the module the ordinary way: this process becomes `python [its options] -m <module> args`."""
    os.execv(sys.executable, [sys.executable, *interpreter_options(), "-m", module, *args])  # noqa: S606


def interpreter_options() -> list[str]:
    """This interpreter's command-line options (-O, -W..., -X...), as given before `-m warmfork`."""
    argv = sys.orig_argv
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "-mwarmfork" or (arg == "-m" and argv[i + 1 : i + 2] == ["warmfork"]):
            return argv[1:i]
    import subprocess

    return subprocess._args_from_interpreter_flags()


def start_server(env: Environment) -> None:
    """Start this environment's server in the background unless one is starting (it holds the lock) or one
    failed to start in the last FAILED_RETRY_S seconds (Doubt, with its reason)."""
    import fcntl
    import subprocess
    import time

    failed = env.place.lstat(env.name("failed"))
    if failed is not None and time.time() - failed.st_mtime < FAILED_RETRY_S:
        note = env.place.read(env.name("failed")).strip()
        raise Doubt("failed", f"the server could not start: {note} (see {env.place.shown(env.name('log'))})")
    lock = env.place.open(env.name("lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # a server holds it: starting, or replacing its socket
    finally:
        os.close(lock)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server_env = dict(os.environ)  # the key's environment (PYTHONPATH is not part of it)
    server_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    with contextlib.suppress(OSError):  # then every run is cold, as if no server were wanted
        subprocess.Popen(
            [sys.executable, *interpreter_options(), "-m", "warmfork", "--serve", env.key],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=server_env,
            start_new_session=True,
            close_fds=True,
        )


def run(module: str, args: list[str]) -> int:
    """Run `python -m module args` in a process forked by the server, or cold if that cannot be done safely
    before the module starts (then with one line on stderr saying why, once per run)."""
    if not enabled():
        cold(module, args)
    place = None
    try:
        env = Environment()
        place = env.place
        found = connect(env.place, env.key)
        if found is None:
            start_server(env)
            cold(module, args)
        return _hand_over(*found, env, module, args)
    except Doubt as doubt:
        rendezvous.warn(doubt, place)
    except (OSError, ValueError) as exc:  # (raised only before the module may have started)
        rendezvous.warn(Doubt("error", f"unexpected: {exc!r}"), place)
    cold(module, args)
    return 1  # not reached: cold() replaces this process


def _hand_over(conn: socket.socket, server_pid: int, env: Environment, module: str, args: list[str]) -> int:
    """Send the run to a verified server; from the moment "go" is sent, the module runs there or nowhere."""
    umask = os.umask(0)
    os.umask(umask)
    message = {
        "v": settings.PROTOCOL,
        "op": "run",
        "module": module,
        "args": args,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path,
        "umask": umask,
        "started": rendezvous.started_since_boot() or 0.0,
        "settings": env.settings,
        "stdio": [[s.line_buffering, s.write_through] for s in (sys.stdout, sys.stderr)],
        "orig_argv": [sys.executable, *interpreter_options(), "-m", module, *args],
    }
    buffer = bytearray()
    try:
        data = json.dumps(message).encode() + b"\n"
        sent = socket.send_fds(conn, [data], [0, 1, 2])  # fails if a descriptor is closed: then cold
        conn.sendall(data[sent:])
        reply = read_message(conn, buffer)
    except (OSError, ValueError) as exc:
        raise Doubt("server", f"the server did not take the run: {exc}") from None
    if reply is None or not ("pid" in reply or "cold" in reply):
        raise Doubt("server", "the server closed the connection before the run started")
    if "cold" in reply:
        raise Doubt("settings", reply["cold"])
    child = int(reply["pid"])
    try:
        pidfd = os.pidfd_open(child)
    except OSError as exc:
        raise Doubt("server", f"the process forked for the run is gone: {exc}") from None

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    try:
        conn.settimeout(None)
        conn.sendall(b"go\n")
    except OSError:  # the server is gone, and with it its child, which never started the module
        raise Doubt("server", "the server exited before the run started") from None
    try:
        reply = read_message(conn, buffer)
    except (OSError, ValueError):
        reply = None
    if not reply or not isinstance(reply.get("status"), int):
        with contextlib.suppress(OSError):
            _make_sure_gone(pidfd)
        sys.stderr.write(f"error: the warm server (pid {server_pid}) exited; {module} in process {child} was stopped\n")
        return 1
    status = int(reply["status"])
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _make_sure_gone(pidfd: int) -> None:
    """The process died with its server (PR_SET_PDEATHSIG); wait for that, or kill it, before reporting."""
    import select

    for signum in (None, signal.SIGKILL):
        if signum is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signum)
        if select.select([pidfd], [], [], 1.0)[0]:
            return


def start(limit_s: float = 120.0) -> int:
    """Start this environment's server (if none runs) and wait until it answers."""
    import time

    if not enabled():
        sys.stderr.write("warmfork is off (WARMFORK=0)\n")
        return 1
    deadline = time.monotonic() + limit_s
    try:
        env = Environment()
        while True:
            found = connect(env.place, env.key)
            if found is not None:
                with found[0] as conn:
                    if request(conn, {"op": "ping"}) is not None:
                        sys.stderr.write(f"warmfork server {found[1]} ready: {env.place.shown(env.name('sock'))}\n")
                        return 0
            if time.monotonic() > deadline:
                log = env.place.shown(env.name("log"))
                sys.stderr.write(f"no warmfork server answered in {limit_s:.0f} s; see {log}\n")
                return 1
            start_server(env)
            time.sleep(0.1)
    except (Doubt, OSError) as exc:
        sys.stderr.write(f"warmfork: cannot start a server: {exc}\n")
        return 1


def stop(every: bool) -> int:
    """Stop this environment's server, or with `every` each server in this user's directory (their running
    modules finish first). Returns how many were asked to stop."""
    import re

    try:
        if every:
            place = rendezvous.locate()
            keys = [n[:-5] for n in sorted(os.listdir(place.fd)) if re.fullmatch(r"[0-9a-f]{16}\.sock", n)]
        else:
            env = Environment()
            place, keys = env.place, [env.key]
    except Doubt as doubt:
        sys.stderr.write(f"warmfork: {doubt}\n")
        return 0
    stopped = 0
    for key in keys:
        try:
            found = connect(place, key)
            if found is not None:
                with found[0] as conn:
                    stopped += bool(request(conn, {"op": "stop"}))
        except (Doubt, OSError, ValueError) as exc:
            sys.stderr.write(f"warmfork: {key}: {exc}\n")
    return stopped


def status() -> dict:
    """Where this environment's server listens, its key and pid (None if it is not running)."""
    env = Environment()
    found = connect(env.place, env.key)
    if found is not None:
        with found[0] as conn:
            request(conn, {"op": "ping"})
    return {"dir": env.place.path, "key": env.key, "pid": found[1] if found else None}
