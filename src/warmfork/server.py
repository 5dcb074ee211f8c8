"""The server side: run the warm-up once, then fork one process per client request; each forked process
becomes its client's process (descriptors, directory, environment, umask, sys.path), checks that it runs
under its client's settings, dies with its server and its client, and runs the module as `__main__`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import time

from warmfork import rendezvous, settings
from warmfork.client import REPLY_TIMEOUT_S
from warmfork.rendezvous import Doubt, Place

DEFAULT_IDLE_S = 900.0
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2


class Child:
    """A forked process as the server knows it: its client's connection and, until the client says go,
    the write end of the pipe the process waits on."""

    def __init__(self, conn: socket.socket, module: str, cwd: str, go_w: int) -> None:
        self.conn = conn
        self.module = module
        self.cwd = cwd
        self.go_w: int | None = go_w
        self.started = time.monotonic()
        self.client_alive = True

    def release(self) -> None:
        """Close the go pipe (the process then either runs or, never told to go, exits)."""
        if self.go_w is not None:
            os.close(self.go_w)
            self.go_w = None


class Server:
    def __init__(self, place: Place, key: str, idle_s: float) -> None:
        self.place = place
        self.key = key
        self.idle_s = idle_s
        self.pid = os.getpid()
        self.log = logging.getLogger("warmfork.server")
        self.children: dict[int, Child] = {}
        self.listener: socket.socket | None = None
        self.stopping = False
        self.own_fds: list[int] = [place.fd]  # closed in every forked process
        self.installed: tuple[str, ...] = ()
        self.foreign: set[str] = set()
        self.top_levels: set[str] = set()
        self.libc = None

    # --- start-up -------------------------------------------------------------------------------------

    def serve(self) -> int:
        import fcntl

        os.umask(0o077)
        try:
            lock = self.place.open(f"{self.key}.lock", os.O_RDWR | os.O_CREAT)
        except Doubt:
            return 1  # nothing here can be trusted to write to, not even a note
        self.own_fds.append(lock)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another server for this key is running or starting
        os.ftruncate(lock, 0)
        os.pwrite(lock, str(os.getpid()).encode(), 0)
        try:
            log = self.place.open(f"{self.key}.log", os.O_WRONLY | os.O_CREAT, truncate=True)
        except Doubt as doubt:
            return self._failed(str(doubt))
        for target in (1, 2):  # the warm-up's output and warnings, and this log, go to the file
            os.dup2(log, target)
        os.close(log)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.log.info("server %d for %s (%s)", os.getpid(), sys.executable, self.key)

        try:
            warmup_path, warmup = settings.read_warmup()
        except OSError as exc:
            return self._failed(f"cannot read WARMFORK_WARMUP: {exc}")
        parts = settings.key_parts(warmup, settings.process_settings())
        if settings.key(parts) != self.key:
            self.log.error("this server's key parts:\n  %s", "\n  ".join(parts))
            return self._failed(f"this process's settings give key {settings.key(parts)}, not {self.key}")
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        start = time.perf_counter()
        if warmup is not None:
            self._warm_up(warmup_path, warmup)
        import threading

        if threading.active_count() > 1:  # a fork copies only the forking thread: Python threads would vanish
            return self._failed(f"the warm-up left Python threads running ({threading.enumerate()}); not serving")
        # Native libraries' own pools (OpenBLAS, jemalloc) are re-created after a fork by their at-fork handlers.
        self.log.info("native threads: %d", len(os.listdir("/proc/self/task")))
        import gc

        gc.collect()
        gc.freeze()  # what the warm-up loaded lives for good: forked processes' collections never walk it
        self._index_modules()
        self.log.info("warmed up: %d modules in %.2f s", len(sys.modules), time.perf_counter() - start)
        return self._listen_and_loop()

    def _warm_up(self, path: str, source: bytes) -> None:
        """Run the warm-up file (the bytes the key was computed from) as a script of its own."""
        try:
            exec(compile(source, path, "exec"), {"__name__": "__warmup__", "__file__": path})  # noqa: S102
        except Exception:
            self.log.exception("the warm-up %s failed", path)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()

    def _index_modules(self) -> None:
        """Which loaded modules come from outside the interpreter's installation (stdlib and site-packages):
        they are the caller's to load, so every forked process drops them."""
        import site
        import sysconfig

        paths = sysconfig.get_paths()
        roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        roots.update([*site.getsitepackages(), site.getusersitepackages()])
        roots.update(os.path.realpath(r) for r in list(roots))
        self.installed = tuple(os.path.join(r, "") for r in roots if r)
        self.foreign = {name for name, module in list(sys.modules.items()) if self._is_foreign(module)}
        self.top_levels = {name.partition(".")[0] for name in sys.modules}

    def _is_foreign(self, module) -> bool:
        files = [getattr(module, "__file__", None)]
        if not files[0]:
            files = list(getattr(module, "__path__", None) or [])
        return any(f and not str(f).startswith(self.installed) for f in files)

    def _failed(self, reason: str) -> int:
        self.log.error("%s", reason)
        with contextlib.suppress(Doubt):
            self.place.write(f"{self.key}.failed", reason + "\n")
        return 1

    # --- the loop ------------------------------------------------------------------------------------

    def _listen_and_loop(self) -> int:
        import select

        wake_r, wake_w = os.pipe()
        self.own_fds += [wake_r, wake_w]
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

        name = f"{self.key}.sock"
        temporary = f"{self.key}.{os.getpid()}.tmp"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.place.address(temporary))  # mode 0600 (umask)
            listener.listen(64)
            os.replace(temporary, name, src_dir_fd=self.place.fd, dst_dir_fd=self.place.fd)
        except OSError as exc:
            listener.close()
            return self._failed(f"cannot listen on {self.place.shown(name)}: {exc}")
        with contextlib.suppress(OSError):
            os.unlink(f"{self.key}.failed", dir_fd=self.place.fd)
        inode = self.place.lstat(name).st_ino
        self.listener = listener
        self.log.info("listening on %s", self.place.shown(name))

        last = time.monotonic()
        try:
            while True:
                if not self.children and (self.stopping or time.monotonic() - last > self.idle_s):
                    break
                if self.stopping and self.listener is not None:  # asked to stop: no new runs
                    self._close_listener(unlink=self._socket_is_ours(inode))
                if not self.stopping and not self._socket_is_ours(inode):
                    self.log.info("socket replaced or removed; stopping")
                    self._close_listener(unlink=False)
                    self.stopping = True
                by_conn = {child.conn: pid for pid, child in self.children.items() if child.client_alive}
                watched = [wake_r, *by_conn]
                if self.listener is not None:
                    watched.append(self.listener)
                try:
                    ready, _, _ = select.select(watched, [], [], 5.0)
                except InterruptedError:
                    ready = []
                for item in ready:
                    if isinstance(item, int):  # the wake-up pipe: a signal arrived
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                    elif item is self.listener:
                        self._accept()
                    elif self.children[by_conn[item]].go_w is not None:
                        self._go(by_conn[item])
                    else:
                        self._client_gone(by_conn[item])
                self._reap()
                if self.children:
                    last = time.monotonic()
        finally:
            self._close_listener(unlink=self._socket_is_ours(inode))
            self.log.info("server %d exits", os.getpid())
        return 0

    def _stop(self, *_: object) -> None:
        """SIGTERM/SIGINT or a stop request: no new runs; running ones finish and report first."""
        self.stopping = True

    def _close_listener(self, unlink: bool) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if unlink:
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.key}.sock", dir_fd=self.place.fd)

    def _socket_is_ours(self, inode: int) -> bool:
        info = self.place.lstat(f"{self.key}.sock")
        return info is not None and info.st_ino == inode

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            client_pid, uid, _ = struct.unpack(
                "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            )
            if uid != os.getuid():
                raise PermissionError(f"request from uid {uid}")
            conn.settimeout(REPLY_TIMEOUT_S)
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            buffer = bytearray(data)
            while data and b"\n" not in buffer:
                data = conn.recv(1 << 20)
                buffer += data
            request = json.loads(bytes(buffer).partition(b"\n")[0]) if buffer else {"op": "connect"}
            op = request.get("op")
            if op == "run" and request.get("v") == settings.PROTOCOL and len(fds) == 3 and _well_formed(request):
                self._fork(conn, fds, request, client_pid)  # it owns conn and fds now
                return
            if op in ("ping", "stop"):
                self.stopping = self.stopping or op == "stop"
                conn.sendall(json.dumps({"ok": True, "pid": os.getpid()}).encode() + b"\n")
            elif op != "connect":  # (a client that connected and left: a liveness check)
                raise ValueError(f"{op} request, protocol {request.get('v')}, {len(fds)} descriptors")
        except Exception as exc:  # noqa: BLE001 - a bad request is dropped; the client runs cold
            self.log.warning("dropped a request: %s", exc)
        conn.close()
        for fd in fds:
            os.close(fd)

    def _fork(self, conn: socket.socket, fds: list[int], request: dict, client_pid: int) -> None:
        import select

        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the process that becomes the client's; it never returns into the server's code
            code = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                code = _child(self, conn, fds, ready_w, go_r, request, client_pid)
            except BaseException:  # noqa: BLE001 - e.g. a forwarded SIGINT before the module started
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        fds.clear()  # (the caller closes what is left in it if this raises)
        verdict = b""
        if select.select([ready_r], [], [], REPLY_TIMEOUT_S)[0]:
            verdict = os.read(ready_r, 65536)
        os.close(ready_r)
        child = Child(conn, request["module"], request["cwd"], go_w)
        if verdict != b"ok":
            reason = verdict.removeprefix(b"cold:").decode(errors="replace") or "the process exited unready"
            self.log.warning("%s in %d runs cold: %s", request["module"], pid, reason)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"cold": reason}).encode() + b"\n")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            child.release()
            conn.close()
            return
        self.children[pid] = child
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            conn.settimeout(None)
        except OSError:
            self.log.warning("client left before %s started; cancelled", request["module"])
            os.kill(pid, signal.SIGKILL)
            child.release()

    def _go(self, pid: int) -> None:
        child = self.children[pid]
        try:
            ok = child.conn.recv(16).startswith(b"go")
        except OSError:
            ok = False
        if ok:
            os.write(child.go_w, b"g")
            self.log.info("%s runs in %d for %s", child.module, pid, child.cwd)
        else:
            os.kill(pid, signal.SIGKILL)
        child.release()

    def _client_gone(self, pid: int) -> None:
        child = self.children[pid]
        try:
            if child.conn.recv(16):
                return  # not an end of stream
        except OSError:
            pass
        child.client_alive = False
        self.log.warning("client of %d (%s) is gone; killing it", pid, child.module)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue  # a process that reported it cannot run warm
            child.release()
            elapsed = time.monotonic() - child.started
            self.log.info("%s in %d: status %d after %.2f s", child.module, pid, status, elapsed)
            with contextlib.suppress(OSError):
                child.conn.sendall(json.dumps({"status": status}).encode() + b"\n")
            child.conn.close()


RUN_FIELDS = {
    "module": str,
    "args": list,
    "cwd": str,
    "env": dict,
    "path": list,
    "umask": int,
    "started": (int, float),
    "settings": dict,
    "stdio": list,
    "orig_argv": list,
}


def _well_formed(request: dict) -> bool:
    return all(isinstance(request.get(name), kind) for name, kind in RUN_FIELDS.items())


# --- in the forked process ---------------------------------------------------------------------------


def _child(server: Server, conn, fds: list[int], ready_w: int, go_r: int, request: dict, client_pid: int) -> int:
    """Become the client's process; report ready (or why not) to the server; wait for go; run the module."""
    try:
        reason = _become_client(server, conn, request, client_pid)
    except BaseException as exc:  # noqa: BLE001 - nothing of the module has run: run it cold instead
        reason = f"the forked process could not take over: {exc!r}"
    os.write(ready_w, b"ok" if reason is None else b"cold:" + reason.encode(errors="replace")[:60000])
    os.close(ready_w)
    if reason is not None or os.read(go_r, 1) != b"g":
        return 1
    os.close(go_r)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for stream, (line_buffering, write_through) in zip((sys.stdout, sys.stderr), request["stdio"], strict=True):
        stream.reconfigure(line_buffering=line_buffering, write_through=write_through)
    return _run_module(request["module"], request["args"])


def _become_client(server: Server, conn, request: dict, client_pid: int) -> str | None:
    """Everything that can fail, done before the module may start: None, or why to run cold instead."""
    import ctypes

    libc = server.libc
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}"
    deathsig = ctypes.c_int()
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(deathsig), 0, 0, 0)
    if deathsig.value != signal.SIGKILL or os.getppid() != server.pid:
        return "the server exited while the process was forked"
    for handler in list(server.log.handlers):
        server.log.removeHandler(handler)
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if server.listener is not None:
        server.listener.close()
    for other in server.children.values():
        other.conn.close()
        other.release()
    for fd in server.own_fds:
        os.close(fd)
    conn.close()

    different = settings.differences(request["settings"], settings.process_settings())
    if different:
        return (
            f"this process's settings differ from its server's ({'; '.join(different)}); "
            "`python -m warmfork --stop` and run again to start a server with them"
        )
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        return f"the server's process cannot enter {request['cwd']}: {exc.strerror}"
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["WARMFORK_CALLER"] = f"{client_pid}:{request['started']}:{os.getpid()}"
    sys.path[:] = request["path"]
    sys.orig_argv[:] = request["orig_argv"]
    for name in _modules_to_drop(server, request["path"]):
        sys.modules.pop(name, None)
    import importlib

    importlib.invalidate_caches()
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # found again from the client's TMPDIR
    time.tzset()
    return None


def _modules_to_drop(server: Server, path: list[str]) -> list[str]:
    """Modules the server loaded from outside the installation, and modules whose top-level name the
    caller's own directories on sys.path (its working directory, PYTHONPATH, .pth entries) provide: a fresh
    process would load those from the caller's files, and so does this one."""
    import importlib.machinery

    suffixes = tuple(importlib.machinery.all_suffixes())
    shadowed: set[str] = set()
    for entry in path:
        directory = entry or os.getcwd()
        if os.path.join(os.path.realpath(directory), "").startswith(server.installed):
            continue
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                top = name.partition(".")[0]
                if top not in server.top_levels:
                    continue
                if name.endswith(suffixes) or os.path.isfile(os.path.join(directory, name, "__init__.py")):
                    shadowed.add(top)  # a module or a regular package (a bare directory shadows nothing)
    return [n for n in sys.modules if n in server.foreign or n.partition(".")[0] in shadowed]


def _run_module(module: str, args: list[str]) -> int:
    """`python -m module args` inside this process: the exit code it would have, with the interpreter's
    exit steps (non-daemon threads joined, atexit handlers run) but without tearing down the modules."""
    import atexit
    import runpy
    import traceback

    sys.argv = [module, *args]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
        traceback.print_exc()
        code = 1
    if "threading" in sys.modules:
        try:
            sys.modules["threading"]._shutdown()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def serve(key: str) -> int:
    """`python -m warmfork --serve KEY` (started by a client): serve KEY's clients from this user's directory."""
    try:
        place = rendezvous.locate()
    except Doubt:
        return 1
    idle = float(os.environ.get("WARMFORK_IDLE", DEFAULT_IDLE_S))
    return Server(place, key, idle).serve()
