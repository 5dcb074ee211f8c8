"""A warm stage runner: each DVC stage runs in a process forked from one that has already imported
scikit-learn, MLflow, pandas and pyarrow, instead of a fresh interpreter paying those imports again.

Why: a stage's own work on the default data is 0.1-0.4 s, but a fresh interpreter spends about 2.5 s
importing what the stage uses (bench/README.md). DVC starts one process per stage, so that cost is paid
five times per `dvc repro`.

How (`bin/py -m churn.pipeline.<name>` goes through `python -m churn.warm -m churn.pipeline.<name>`):

- The client (this module's `main`, a few standard-library imports) connects to a per-user Unix socket
  and sends its argv, working directory, environment, umask and sys.path, with its stdin, stdout and
  stderr themselves (SCM_RIGHTS), so the stage writes straight to whatever DVC gave the client.
- The server forks a child per request. The child takes the client's file descriptors, directory,
  environment, umask and sys.path, drops any `churn` module (a queued experiment runs its own commit's
  code, from its own checkout) and runs the stage module as `__main__`. The server reports the child's
  exit status; the client exits with it and forwards SIGINT/SIGTERM/SIGHUP to the child.
- No server yet: the client starts one in the background (it imports the libraries and uses each once,
  then listens) and runs this stage the cold way (exec of `python -m <module>`), so nothing ever waits
  for the server. Any failure to reach a server before the stage has started falls back to the cold way
  too, and a stage never runs twice: the child waits for the client's "go".
- One server per interpreter, site-packages state, resource limits, CPU set and import-time environment
  (thread counts, locale, hash seed...), so a changed venv or environment never reuses modules imported
  under other settings. The server holds no repository state and no threads: no open store, no churn
  code; it exits after CHURN_WARM_IDLE seconds (default 900) without requests. `python -m churn.warm
  --start` starts one and waits until it accepts; `--stop` stops this user's servers (running stages
  finish first).
- CHURN_WARM=0 turns it off (bin/py then execs `python -m churn.pipeline.<name>` directly).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

PROTOCOL = 1
DEFAULT_IDLE_S = 900.0
REPLY_TIMEOUT_S = 10.0
FAILED_RETRY_S = 600.0
# Third-party modules the stages import; a child only imports churn itself and whatever is missing here.
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "yaml",
    "psutil",
    "filelock",
    "threadpoolctl",
    "sklearn.base",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "xgboost",
    "skops.io",
    "sqlalchemy",
    "mlflow",
    "mlflow.entities",
    "mlflow.exceptions",
    "mlflow.data.dataset_source_registry",
    "mlflow.data.pandas_dataset",
    "mlflow.models",
    "mlflow.sklearn",
    "mlflow.types.schema",
    "mlflow.tracking.context.registry",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
    # What MLflow imports lazily when a stage opens the store, starts a run, logs a dataset or a model,
    # and pyarrow's reader modules (names that no longer exist are logged and skipped).
    "git",
    "alembic.command",
    "alembic.config",
    "sqlalchemy.dialects.sqlite",
    "narwhals",
    "opentelemetry.sdk.metrics",
    "mlflow.pyfunc",
    "mlflow.tracing.export",
    "mlflow.tracing.processor",
    "mlflow.tracing.utils.environment",
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.store.model_registry.sqlalchemy_workspace_store",
    "mlflow.models.display_utils",
    "mlflow.types.responses",
    "mlflow.utils.spark_utils",
    "pyarrow.csv",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
    "pandas.core.arrays.arrow.extension_types",
    "pandas.core.methods.to_dict",
)
# Caches that depend only on the installed packages (the server key includes site-packages' mtime), filled
# once in the server: MLflow maps every installed module to its distribution (0.35 s) whenever a model is
# logged with pip requirements, to check them against what is installed.
# Pillow registers its image plugins on first use (matplotlib's savefig).
WARM_UPS = (
    ("mlflow.utils.requirements_utils", "_init_packages_to_modules_map"),
    ("PIL.Image", "init"),
)
# Environment variables that libraries read once, when imported: a server is only shared by clients that
# agree on all of them.
IMPORT_TIME_ENV = (
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONWARNINGS",
    "PYTHONDONTWRITEBYTECODE",
    "LANG",
    "LC_",
    "TZ",
    "OMP_",
    "OPENBLAS_",
    "MKL_",
    "KMP_",
    "BLIS_",
    "GOTO_",
    "VECLIB_",
    "NUMEXPR_",
    "SKLEARN_",
    "MPL",
    "MLFLOW_LOGGING",
    "MLFLOW_ENABLE",
    "MLFLOW_DISABLE",
    "XGBOOST_",
    "GIT_PYTHON",
)
RLIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def enabled() -> bool:
    return os.environ.get("CHURN_WARM", "1") != "0" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")


# --- where a server lives -------------------------------------------------------------------------------


class Paths:
    """The socket, lock and log of the server for this interpreter and import-time environment."""

    def __init__(self, directory: str, key: str) -> None:
        self.directory = directory
        self.key = key
        self.socket = os.path.join(directory, f"{key}.sock")
        self.lock = os.path.join(directory, f"{key}.lock")
        self.log = os.path.join(directory, f"{key}.log")
        self.failed = os.path.join(directory, f"{key}.failed")


def runtime_dir() -> str | None:
    """A directory only this user can enter, or None (then the runner is not used)."""
    base = os.environ.get("CHURN_WARM_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp",  # noqa: S108 - 0700, owner checked
        f"churn-warm-{os.getuid()}",
    )
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        info = os.stat(base)
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return base


def server_key() -> str:
    import hashlib
    import sysconfig

    digest = hashlib.sha256()
    parts = [str(PROTOCOL), os.path.realpath(sys.executable), sys.version]
    for path in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        try:
            parts.append(f"{path}:{os.stat(path).st_mtime_ns}")
        except OSError:
            parts.append(path)
    with open(__file__, "rb") as handle:
        parts.append(hashlib.sha256(handle.read()).hexdigest())
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV))
    # A stage process inherits the server's limits and CPU set, not the client's: only share when they agree.
    import resource

    parts += [str(resource.getrlimit(getattr(resource, name))) for name in RLIMITS if hasattr(resource, name)]
    if hasattr(os, "sched_getaffinity"):
        parts.append(str(sorted(os.sched_getaffinity(0))))
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()[:16]


def paths() -> Paths | None:
    directory = runtime_dir()
    if not directory:
        return None
    where = Paths(directory, server_key())
    return where if len(where.socket.encode()) < 100 else None  # AF_UNIX paths are limited to ~107 bytes


def process_origin() -> tuple[int, float] | None:
    """For a stage run by the warm runner: the pid and start (seconds since boot) of the client process
    that DVC started, which stands for this process when looking for the `dvc` ancestor or timing it."""
    value = os.environ.get("CHURN_WARM_CLIENT", "")
    try:
        pid, started, child = value.split(":")
        return (int(pid), float(started)) if int(child) == os.getpid() else None
    except ValueError:
        return None


def started_since_boot(pid: int | str = "self") -> float | None:
    """When a process started, in seconds since boot (CLOCK_BOOTTIME, 10 ms resolution), from /proc.

    Not psutil's create_time(): that adds /proc/stat's boot time, which is truncated to whole seconds, so
    process ages come out up to a second long."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_age() -> float | None:
    """Seconds since this stage's process started (for a warm stage, its client), or None if unknown."""
    import time

    origin = process_origin()
    started = origin[1] if origin and origin[1] > 0 else started_since_boot()
    return None if started is None else time.clock_gettime(time.CLOCK_BOOTTIME) - started


# --- client ------------------------------------------------------------------------------------------


def _cold(module: str, args: list[str]) -> None:
    """Run the stage the ordinary way: this process becomes `python -m <module>`."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])  # noqa: S606 - no shell, our interpreter


def _read_message(conn: socket.socket, buffer: bytearray) -> dict | None:
    """The next newline-terminated JSON message, or None at end of stream."""
    while b"\n" not in buffer:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def _start_server(where: Paths) -> None:
    """Start a server in the background, unless one is starting already (it holds the lock)."""
    import fcntl
    import subprocess
    import time

    try:  # a server that could not start leaves a note; do not retry for a while
        if time.time() - os.stat(where.failed).st_mtime < FAILED_RETRY_S:
            return
    except OSError:
        pass
    try:
        with open(where.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return  # locked: a server is starting (or running and the socket is being replaced)
    env = dict(os.environ)
    # As churn.cli sets them before MLflow is imported (MLflow reads both when imported). With telemetry
    # on, MLflow starts a thread at import, and a server that has threads refuses to serve: stages run cold.
    env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with contextlib.suppress(OSError):  # then every stage just runs cold
        subprocess.Popen(
            [sys.executable, "-m", "churn.warm", "--serve", where.key],  # the key of the client's environment
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _connect(where: Paths) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(where.socket)
    except OSError:
        conn.close()
        return None
    return conn


def run(module: str, args: list[str]) -> int:
    """Run `python -m module args` in a warm process, or cold if that is not possible before it starts."""
    started = started_since_boot() or 0.0
    where = paths() if enabled() else None
    conn = _connect(where) if where else None
    if conn is None:
        if where:
            _start_server(where)
        _cold(module, args)
    umask = os.umask(0)
    os.umask(umask)
    request = {
        "v": PROTOCOL,
        "module": module,
        "args": args,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path,
        "umask": umask,
        "client": [os.getpid(), started],
    }
    buffer = bytearray()
    try:
        conn.settimeout(REPLY_TIMEOUT_S)
        data = json.dumps(request).encode() + b"\n"
        sent = socket.send_fds(conn, [data], [0, 1, 2])  # fails if DVC closed one of them: then cold
        conn.sendall(data[sent:])
        reply = _read_message(conn, buffer)
        if not reply or "pid" not in reply:
            raise OSError("no reply")
    except (OSError, ValueError):
        conn.close()
        _cold(module, args)  # the stage has not started: nothing runs twice
    child = int(reply["pid"])

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            os.kill(child, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    try:
        conn.settimeout(None)
        conn.sendall(b"go\n")
    except OSError:  # the server is gone; its child, waiting for go, exits without running anything
        _cold(module, args)
    try:
        reply = _read_message(conn, buffer)
    except (OSError, ValueError):
        reply = None
    if not reply or "status" not in reply:
        sys.stderr.write(f"error: lost the warm stage process {child} of {module} (its server exited)\n")
        return 1
    status = int(reply["status"])
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


# --- server ------------------------------------------------------------------------------------------


def _preload(log) -> None:
    import importlib
    import time

    import matplotlib

    matplotlib.use("Agg")  # what churn.core.plots selects; importing pyplot then never probes for a display
    start = time.perf_counter()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional package only costs its import later
            log.warning("preload %s failed: %s", name, exc)
    for module, function in WARM_UPS:
        try:
            getattr(importlib.import_module(module), function)()
        except Exception as exc:  # noqa: BLE001 - the stage fills the cache itself
            log.warning("warm-up %s.%s failed: %s", module, function, exc)
    _exercise(log)
    import gc

    gc.collect()
    gc.freeze()  # the preloaded objects live for good: stage processes' collections never walk them
    log.info("preloaded %d modules in %.2f s", len(sys.modules), time.perf_counter() - start)


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _exercise(log) -> None:
    """Use each library once on a few rows, so that what it sets up on first use is done here once rather
    than in every stage process (measured: a stage's first run in a fresh process took 0.1-0.2 s longer than
    its second): SQLAlchemy's mapper configuration and MLflow's store code paths, pyarrow and pandas
    conversions, scikit-learn's validation, matplotlib's text rendering. Nothing here may start a thread:
    the server forks, so a new thread stops it from serving."""
    for name, exercise in (
        ("mlflow store", _exercise_store),
        ("tables", _exercise_tables),
        ("scikit-learn", _exercise_sklearn),
        ("matplotlib", _exercise_plots),
    ):
        before = _native_threads()
        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - a stage then pays that first use itself
            log.warning("exercising %s failed: %s", name, exc)
        if _native_threads() > before:
            raise RuntimeError(f"exercising {name} started a thread")


def _exercise_store() -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    directory = tempfile.mkdtemp(prefix="churn-warm-store-")
    client = None
    try:
        client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
        experiment = client.create_experiment("warm", artifact_location=Path(directory, "artifacts").as_uri())
        client.get_experiment_by_name("warm")
        run = client.create_run(experiment, tags={"warm": "1"})
        items = {"metrics": [Metric("m", 1.0, 0, 0)], "params": [Param("p", "1")], "tags": [RunTag("t", "1")]}
        client.log_batch(run.info.run_id, **items)
        client.search_runs([experiment], filter_string="tags.`warm` = '1'", max_results=1)
        client.set_terminated(run.info.run_id, "FINISHED")
        client.search_registered_models(max_results=1)
        client.create_registered_model("warm")
        client.set_registered_model_tag("warm", "t", "1")
        source = Path(directory, "artifacts", "model").as_uri()
        version = client.create_model_version("warm", source, run_id=run.info.run_id)
        client.set_registered_model_alias("warm", "champion", version.version)
        client.get_model_version_by_alias("warm", "champion")
        client.search_model_versions("name = 'warm'", max_results=10)
        client.get_registered_model("warm")
    finally:
        if client is not None:  # no connection may cross the fork
            stores = [client._tracking_client.store, client._get_registry_client().store]
            for engine in {id(e): e for e in (getattr(store, "engine", None) for store in stores) if e}.values():
                engine.dispose()
        shutil.rmtree(directory, ignore_errors=True)


def _frame():
    import pandas as pd

    return pd.DataFrame(
        {"x": [1.0, None, 3.0, 4.0, 5.0, 6.0], "c": ["a", "b", None, "a", "b", "a"], "y": [0, 1, 0, 1, 0, 1]}
    )


def _exercise_tables() -> None:
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _frame()
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False, nthreads=1), sink, compression="snappy")
    # (pq.read_table would start pyarrow's I/O threads; this path reads on the calling thread)
    parquet = pq.ParquetFile(pa.BufferReader(sink.getvalue()), pre_buffer=False)
    back = parquet.read(use_threads=False).to_pandas(use_threads=False)
    pd.read_csv(io.StringIO(back.to_csv(index=False)), dtype=str).isna().any()


def _exercise_sklearn() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_curve, roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame()
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [("impute", SimpleImputer(strategy="most_frequent")), ("encode", OneHotEncoder(handle_unknown="ignore"))]
    )
    features = ColumnTransformer([("num", numeric, ["x"]), ("cat", categorical, ["c"])]).fit_transform(frame)
    model = LogisticRegression().fit(features, frame["y"])
    scores = model.predict_proba(features)[:, 1]
    list(StratifiedKFold(n_splits=2).split(features, frame["y"]))
    roc_auc_score(frame["y"], scores), log_loss(frame["y"], scores), confusion_matrix(frame["y"], scores > 0.5)
    roc_curve(frame["y"], scores), precision_recall_curve(frame["y"], scores)


def _exercise_plots() -> None:
    import io

    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [0, 1], label="line")
    axes.set_title("warm")
    axes.legend()
    figure.tight_layout()
    figure.savefig(io.BytesIO(), format="png", dpi=40)
    plt.close(figure)


class Child:
    """A stage process, as the server knows it: its client's connection, and until the client says go, the
    write end of the pipe the process waits on."""

    def __init__(self, conn: socket.socket, module: str, cwd: str, go_w: int) -> None:
        import time

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
    def __init__(self, where: Paths, idle_s: float) -> None:
        import logging

        self.where = where
        self.idle_s = idle_s
        self.log = logging.getLogger("churn.warm.server")
        self.children: dict[int, Child] = {}
        self.listener: socket.socket | None = None
        self.stopping = False
        self.own_fds: list[int] = []  # the lock and wake-up pipe: closed in every stage process

    def serve(self) -> int:
        import fcntl
        import logging
        import time

        lock = open(self.where.lock, "a+")  # noqa: SIM115 - held for the server's life
        self.own_fds.append(lock.fileno())
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another server for this key is running or starting
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        handler = logging.FileHandler(self.where.log, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.log.info("server %d for %s (%s)", os.getpid(), sys.executable, self.where.key)
        try:
            _preload(self.log)
        except RuntimeError as exc:
            return self._failed(str(exc))
        import threading

        if threading.active_count() > 1:  # forking a process with threads is not safe
            return self._failed(f"threads started while preloading ({threading.enumerate()}); not serving")

        wake_r, wake_w = os.pipe()
        self.own_fds += [wake_r, wake_w]
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = f"{self.where.socket}.{os.getpid()}"
        try:
            listener.bind(temporary)
            os.chmod(temporary, 0o600)
            listener.listen(64)
            os.replace(temporary, self.where.socket)  # clients see a socket only once it accepts
        except OSError as exc:
            listener.close()
            return self._failed(f"cannot listen on {self.where.socket}: {exc}")
        with contextlib.suppress(OSError):
            os.unlink(self.where.failed)
        inode = os.stat(self.where.socket).st_ino
        self.listener = listener
        self.log.info("listening on %s", self.where.socket)

        import select

        last = time.monotonic()
        try:
            while True:
                if not self.children and (self.stopping or time.monotonic() - last > self.idle_s):
                    break
                if self.stopping and self.listener is not None:  # asked to stop: no new stages
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

    def _failed(self, reason: str) -> int:
        self.log.error("%s", reason)
        with open(self.where.failed, "w") as note:
            note.write(reason + "\n")
        return 1

    def _stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop accepting; running stages finish and get their status first. (Only a flag:
        the wake-up pipe makes select return, and the loop closes the listener.)"""
        self.stopping = True

    def _close_listener(self, unlink: bool) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if unlink:
                with contextlib.suppress(OSError):
                    os.unlink(self.where.socket)

    def _socket_is_ours(self, inode: int) -> bool:
        try:
            return os.stat(self.where.socket).st_ino == inode
        except OSError:
            return False

    def _accept(self) -> None:
        import struct

        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.getuid():
                raise PermissionError(f"request from uid {uid}")
            conn.settimeout(REPLY_TIMEOUT_S)
            data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            if not data and not fds:  # `--start` checking that the server accepts
                conn.close()
                return
            buffer = bytearray(data)
            while b"\n" not in buffer:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("request cut short")
                buffer += chunk
            request = json.loads(bytes(buffer).partition(b"\n")[0])
            if request.get("v") != PROTOCOL or len(fds) != 3:
                raise ValueError(f"protocol {request.get('v')} with {len(fds)} descriptors")
        except Exception as exc:  # noqa: BLE001 - a bad request is dropped; the client falls back
            self.log.warning("dropped a request: %s", exc)
            conn.close()
            return
        go_r, go_w = os.pipe()
        for handler in self.log.handlers:
            handler.flush()
        pid = os.fork()
        if pid == 0:  # the stage process
            os.close(go_w)
            code = _child(self, conn, fds, go_r, request)
            os._exit(code)
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        child = self.children[pid] = Child(conn, request["module"], request["cwd"], go_w)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            conn.settimeout(None)
        except OSError:
            self.log.warning("client left before stage %s started; cancelled", request["module"])
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
            self.log.info("stage %s runs in %d for %s", child.module, pid, child.cwd)
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
        self.log.warning("client of %d (%s) is gone; terminating it", pid, child.module)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        import time

        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid)
            child.release()
            conn = child.conn
            elapsed = time.monotonic() - child.started
            self.log.info("stage %s in %d: status %d after %.2f s", child.module, pid, status, elapsed)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"status": status}).encode() + b"\n")
            conn.close()


def _child(server: Server, conn: socket.socket, fds: list[int], go_r: int, request: dict) -> int:
    """In the forked stage process: become the client's process, wait for go, run the module."""
    try:
        for handler in list(server.log.handlers):
            server.log.removeHandler(handler)
            handler.close()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if server.listener is not None:
            server.listener.close()
        for other in server.children.values():
            other.conn.close()
            if other.go_w is not None:
                os.close(other.go_w)
        for fd in server.own_fds:
            os.close(fd)
        conn.close()
        if os.read(go_r, 1) != b"g":
            return 1
        os.close(go_r)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        client_pid, client_started = request["client"]
        os.environ["CHURN_WARM_CLIENT"] = f"{client_pid}:{client_started}:{os.getpid()}"
        sys.path[:] = request["path"]
        for name in [name for name in sys.modules if name == "churn" or name.startswith("churn.")]:
            del sys.modules[name]
        import importlib
        import tempfile
        import time

        importlib.invalidate_caches()
        tempfile.tempdir = None
        time.tzset()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()  # a fresh interpreter would not share the server's state
        sys.stdout.reconfigure(line_buffering=os.isatty(1) or bool(os.environ.get("PYTHONUNBUFFERED")))
    except BaseException:  # noqa: BLE001 - nothing of the stage has run; report and stop
        import traceback

        traceback.print_exc()
        return 1
    return _run_module(request["module"], request["args"])


def _run_module(module: str, args: list[str]) -> int:
    """`python -m module args` inside this process: the exit code it would have, with interpreter exit
    handlers run (MLflow ends its runs in one) but without tearing down the preloaded modules."""
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
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def start(limit_s: float = 120.0) -> int:
    """Start the server for this environment (if none runs) and wait until it accepts requests."""
    import time

    where = paths() if enabled() else None
    if where is None:
        sys.stderr.write("the warm stage runner is off here (CHURN_WARM=0 or no private directory)\n")
        return 1
    deadline = time.monotonic() + limit_s
    while (conn := _connect(where)) is None:
        if os.path.exists(where.failed):
            with open(where.failed) as note:
                sys.stderr.write(f"the warm stage server could not start: {note.read().strip()}\n")
            return 1
        if time.monotonic() > deadline:
            sys.stderr.write(f"no warm stage server came up in {limit_s:.0f} s; see {where.log}\n")
            return 1
        _start_server(where)
        time.sleep(0.2)
    conn.close()
    sys.stderr.write(f"warm stage server ready: {where.socket}\n")
    return 0


def stop_all() -> int:
    """Stop every server of this user (their running stages finish first)."""
    directory = runtime_dir()
    if not directory:
        return 0
    stopped = 0
    for name in os.listdir(directory):
        if not name.endswith(".lock"):
            continue
        try:
            with open(os.path.join(directory, name)) as handle:
                pid = int(handle.read().strip() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"churn.warm" not in handle.read():
                    continue
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        except (OSError, ValueError):
            continue
    return stopped


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"] and len(argv) == 2:
        directory = runtime_dir()
        if directory is None:
            return 1
        where = Paths(directory, argv[1])
        idle = float(os.environ.get("CHURN_WARM_IDLE", DEFAULT_IDLE_S))
        return Server(where, idle).serve()
    if argv[:1] == ["--start"]:
        return start()
    if argv[:1] == ["--stop"]:
        stopped = stop_all()
        sys.stderr.write(f"stopped {stopped} warm stage server(s)\n")
        return 0
    if len(argv) >= 2 and argv[0] == "-m":
        return run(argv[1], argv[2:])
    sys.stderr.write("usage: python -m churn.warm -m MODULE [ARGS...] | --start | --stop | --serve KEY\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
