"""The team path against the local one: `python -m bench.run --only server`.

(a) the repository's sqlite store against (b) `make server` (churn.tools.server: basic auth with the shipped
credential cache, PostgreSQL backend store, artifacts served through the server, MLflow's default 4 workers), in
one run, alternating: `dvc repro -f` on the bundled sample, a queued 4-experiment sweep at -j 2, and 10 tuning
trials. Each figure is the ratio b/a. Then one counted `dvc repro -f` through churn.tools.proxy (requests per
stage), and the cost of one authenticated API call against the same call to the same server without basic auth
(and, for the record, with the credential cache off: the hash verified on every request).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from churn.tools.postgres import free_port
from churn.tools.proxy import CountingProxy, summary
from churn.tools.sandbox import project_env

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.common import Bench

log = logging.getLogger("bench.server")

RATIO_MAX = 1.3  # the team server against the local store
AUTH_RATIO_MAX = 2.0  # an authenticated API call against an unauthenticated one
SWEEP = "model.C=0.01,0.1,1,10"
TRIALS = 10
CALLS = 200  # API calls timed per server
STAGES = ("prepare", "featurize", "train", "evaluate", "register")


@contextmanager
def tracking_server(
    workdir: Path, backend_store_uri: str, auth: bool = True, auth_cache_ttl: int | None = None
) -> Iterator[dict]:
    """`make server` on a free port (or, with auth=False, the same `mlflow server` without `--app-name
    basic-auth`), its admin's credentials; stopped with its workers afterwards."""
    from churn.tools import server

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    admin = ("admin", secrets.token_hex(16))
    env = project_env(
        **{
            "MLFLOW_BACKEND_STORE_URI": backend_store_uri,
            "MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "artifacts"),
            "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(port),
        }
    )
    if auth:
        cmd = [sys.executable, "-m", "churn.tools.server", "--dir", str(workdir)]
        if auth_cache_ttl is not None:
            cmd += ["--auth-cache-ttl", str(auth_cache_ttl)]
    else:  # the same command without `--app-name basic-auth`; the database password through libpq's PGPASSWORD
        uri, db_token = server.split_password(backend_store_uri)
        env = server.server_environment(env, server.write_auth_config(workdir), db_token)
        cmd = server.server_command(uri, str(workdir / "artifacts"), "127.0.0.1", port)
        cut = cmd.index("--app-name")
        cmd = cmd[:cut] + cmd[cut + 2 :]
        subprocess.run(server.migrate_command(uri), env=env, capture_output=True, check=True)
    url = f"http://127.0.0.1:{port}"
    with (workdir / "server.log").open("wb") as handle:
        process = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the tracking server exited {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the tracking server did not answer on {url}") from None
                time.sleep(0.5)
        yield {"url": url, "user": admin[0], "token": admin[1] if auth else ""}
    finally:
        import signal

        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=20)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def client_env(server: dict | None, **extra: str) -> dict[str, str]:
    """The environment a team member uses: the server and their credentials, or nothing (the local store)."""
    if server is None:
        return project_env(**extra)
    user, token = server["user"], server["token"]
    return project_env(
        **{"MLFLOW_TRACKING_URI": server["url"], "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": token},
        **extra,
    )


def api_call(server: dict) -> float:
    """Seconds of one `experiments/get-by-name` (a new connection each time, as a new stage process opens)."""
    import base64

    headers = {}
    if server["token"]:
        basic = base64.b64encode(f"{server['user']}:{server['token']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    url = f"{server['url']}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
        response.read()
    return time.perf_counter() - start


def api_latency(servers: dict[str, dict], calls: int = CALLS) -> dict[str, float]:
    """Median seconds of one API call on each server, the servers taking turns call by call (after 20 calls
    each to warm every worker and its cache), so that the machine's load falls on all alike."""
    for server in servers.values():
        for _ in range(20):
            api_call(server)
    times: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(calls):
        for name, server in servers.items():
            times[name].append(api_call(server))
    return {name: statistics.median(values) for name, values in times.items()}


def sweep_wall(root: Path, env: dict[str, str], work: Path, label: str) -> float:
    """Queue the 4 experiments and run them at -j 2 from the same starting state: seconds to the last one."""
    from bench.common import dvc, timings_env
    from bench.sweeps import start_queue, wait_for_queue, wait_for_workers

    dvc(root, "queue", "remove", "--all")
    dvc(root, "exp", "remove", "--all-commits")
    shutil.rmtree(root / ".dvc" / "cache" / "runs", ignore_errors=True)
    dvc(root, "exp", "run", "--queue", "-S", SWEEP, env=env)
    timings = work / f"server-sweep-{label}.jsonl"
    timings.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        start_queue(root, 2, {**env, **timings_env(timings)}, work / f"server-sweep-{label}.log")
        status = wait_for_queue(root, timings, 4)
        wall = time.perf_counter() - start
    finally:
        wait_for_workers(root)
    if status.count("Success") != 4:
        raise RuntimeError(f"sweep on {label}: not every experiment succeeded:\n{status}")
    return wall


def tune_wall(root: Path, env: dict[str, str], study: str) -> float:
    from bench.common import run

    command = [str(root / "bin" / "py"), "-m", "churn.tools.tune", "--no-progress", "--trials", str(TRIALS)]
    wall, _ = run([*command, "--study", study], root, env)
    return wall


def counted_repro(root: Path, server: dict) -> dict[str, dict[str, int]]:
    """One `dvc repro -f` through the counting proxy: requests per stage (each stage begins with its health
    check), by endpoint."""
    from bench.common import dvc

    with CountingProxy(server["url"]) as proxy:
        dvc(root, "repro", "-f", env=client_env({**server, "url": proxy.url}))
        requests = proxy.requests
    segments: list[list] = []
    for request in requests:
        if request.endpoint == "GET health" or not segments:
            segments.append([])
        segments[-1].append(request)
    return {stage: summary(segment) for stage, segment in zip(STAGES, segments, strict=False)}


def section(b: Bench) -> dict:
    from bench.common import dvc, heading, median, postgres_server, project_params, run
    from churn.tools import postgres

    heading(
        "server: the local sqlite store (a) against `make server` (b: basic auth, PostgreSQL, 4 workers), "
        f"alternating {b.repeats} times: dvc repro -f, a 4-experiment sweep at -j 2, {TRIALS} tuning trials"
    )
    rows = project_params()["generate"]["rows"]
    root = b.repo("server", rows)
    b.committed(root, "baseline")  # the data and the baseline the experiments branch from
    out: dict = {"rows": rows, "repro_s": {"local": [], "server": []}, "sweep_s": {}, "tune_s": {}}
    with (
        postgres_server() as pg,
        postgres.database(pg, "bench_server") as database,
        tracking_server(b.work / "server", database) as server,
    ):
        run([sys.executable, "-m", "churn.tools.store", "init"], root, client_env(server))
        stores = [("local", None), ("server", server)]
        for i in range(b.repeats):
            for label, target in stores if i % 2 == 0 else stores[::-1]:
                wall, _ = dvc(root, "repro", "-f", env=client_env(target))
                out["repro_s"][label].append(round(wall, 2))
                log.info("dvc repro -f on %s: %.1f s", label, wall)
        out["requests"] = counted_repro(root, server)
        # The sweep and the trials: (a) (b) (b) (a), or (a) (b) with --repeats 1.
        for i, (label, target) in enumerate(stores + stores[::-1] if b.repeats >= 2 else stores):
            wall = sweep_wall(root, client_env(target), b.work, f"{label}-{i}")
            out["sweep_s"].setdefault(label, []).append(round(wall, 2))
            log.info("sweep -j 2 on %s: %.1f s", label, wall)
            wall = tune_wall(root, client_env(target), f"bench-{label}-{i}")
            out["tune_s"].setdefault(label, []).append(round(wall, 2))
            log.info("%d trials on %s: %.1f s", TRIALS, label, wall)
        with tracking_server(b.work / "server-noauth", database, auth=False) as plain:
            out["api_s"] = api_latency({"basic_auth": server, "no_auth": plain})
            with tracking_server(b.work / "server-nocache", database, auth_cache_ttl=0) as uncached:
                slow = api_latency({"basic_auth_no_cache": uncached, "no_auth": plain}, calls=20)
                out["api_s"]["basic_auth_no_cache"] = slow["basic_auth_no_cache"]
    shutil.rmtree(root, ignore_errors=True)
    b.repos.pop("server", None)

    for stage, counts in out["requests"].items():
        total = sum(counts.values())
        uploads = counts.get("PUT artifacts", 0)
        print(f"  {stage}: {total - uploads} requests + {uploads} uploads: {counts}")
    repro = {label: median(times) for label, times in out["repro_s"].items()}
    for name, local, team in (
        ("dvc repro -f", repro["local"], repro["server"]),
        ("4-experiment sweep, -j 2", median(out["sweep_s"]["local"]), median(out["sweep_s"]["server"])),
        (f"{TRIALS} tuning trials", median(out["tune_s"]["local"]), median(out["tune_s"]["server"])),
    ):
        ratio = team / local
        b.figure(
            f"{name}: make server / local sqlite",
            ratio,
            f"{ratio:.2f}x ({team:.1f} s / {local:.1f} s)",
            f"<= {RATIO_MAX}",
            ratio <= RATIO_MAX,
        )
    api = out["api_s"]
    auth_ratio = api["basic_auth"] / api["no_auth"]
    b.figure(
        "one API call, basic auth (cached credential) / no auth",
        auth_ratio,
        f"{auth_ratio:.2f}x ({api['basic_auth'] * 1000:.1f} ms / {api['no_auth'] * 1000:.1f} ms, median of {CALLS})",
        f"<= {AUTH_RATIO_MAX}",
        auth_ratio <= AUTH_RATIO_MAX,
    )
    b.figure(
        "one API call, basic auth with the credential cache off / no auth (the hash checked every time)",
        api["basic_auth_no_cache"] / api["no_auth"],
        f"{api['basic_auth_no_cache'] / api['no_auth']:.1f}x ({api['basic_auth_no_cache'] * 1000:.0f} ms)",
        None,
        None,
    )
    return out
