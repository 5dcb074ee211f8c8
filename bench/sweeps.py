"""Benchmark section sweeps: a four-experiment sweep on two queue workers against one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    POLL_S,
    STAGES,
    SWEEP,
    SWEEP_SPEEDUP_MIN,
    Bench,
    BenchError,
    dvc,
    heading,
    log,
    median,
    project_params,
    read_records,
    timings_env,
)


def queue_status(root: Path, attempts: int = 3) -> subprocess.CompletedProcess:
    """`dvc queue status`, asked again (after a second) when it fails: DVC 3.67 can read a task's info file
    while a worker is writing it ("Expecting value: line 1 column 1")."""
    for attempt in range(attempts):
        try:
            return dvc(root, "queue", "status")[1]
        except BenchError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def wait_for_queue(root: Path, timings: Path, experiments: int, limit_s: float = 3600) -> str:
    """Wait until nothing is queued or running; returns the last `dvc queue status`.

    `dvc queue status` costs most of a second of CPU, which a -j 2 sweep on two cores would feel: until
    every experiment's last stage has written its timings, it is asked only every 15 s (to notice a
    failure), then every second until DVC has collected the experiments."""
    from churn.tools.sweep import ACTIVE

    deadline = time.monotonic() + limit_s
    asked = -1e9
    stalled = 0
    while time.monotonic() < deadline:
        finished = sum(r["stage"] == STAGES[-1] for r in read_records(timings))
        if finished >= experiments and collected(root) < experiments:
            time.sleep(0.2)  # DVC is committing the experiments and fetching their refs: cheap to watch
            continue
        if finished >= experiments or time.monotonic() - asked >= 15:
            asked = time.monotonic()
            result = queue_status(root)
            tasks, _, workers = result.stdout.partition("Worker status")
            if not ACTIVE.search(tasks):
                return result.stdout
            stalled = stalled + 1 if "0 active, 0 idle" in workers else 0
            if stalled >= 3:
                raise BenchError(f"experiments are queued in {root} but no worker is left:\n{result.stdout}")
        time.sleep(1.0 if finished >= experiments else 0.5)
    raise BenchError(f"the queue in {root} did not finish within {limit_s:.0f} s")


def collected(root: Path) -> int:
    """How many experiments DVC has collected into the repository (their refs under refs/exps)."""
    result = subprocess.run(["git", "for-each-ref", "refs/exps"], cwd=root, capture_output=True, text=True)
    return len(re.findall(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/\S+", result.stdout))  # not exec/, celery/


def wait_for_workers(root: Path, limit_s: float = 120) -> None:
    """Wait until the queue's idle workers have exited on their own (after about 10 s). Not `dvc queue stop`:
    its shutdown message stays in the queue's broker and stops the next run's workers after one task."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        _, result = dvc(root, "queue", "status")
        if "0 active, 0 idle" in result.stdout:
            return
        time.sleep(POLL_S)
    raise BenchError(f"the queue workers of {root} did not exit within {limit_s:.0f} s")


def start_queue(root: Path, jobs: int, env: dict[str, str], output: Path) -> None:
    """`dvc queue start` with its output to a file: the workers it spawns inherit its stdout, so with a pipe
    the call would return only when they exit (every task done, plus their 10 s of idling)."""
    with output.open("w") as handle:
        cmd = [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)]
        # (a timeout: DVC can lose a worker's shutdown message, and then `queue start` never returns)
        result = subprocess.run(cmd, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode != 0:
        raise BenchError(f"dvc queue start exited {result.returncode}: {output.read_text()[-1500:]}")


def sweep_once(b: Bench, root: Path, jobs: int, index: int) -> dict:
    """Queue the 4 experiments and run them with `jobs` workers, from the same starting state every time:
    no earlier experiments, an empty run-cache (or the results would be restored, not computed) and the
    MLflow store as the baseline left it."""
    dvc(root, "queue", "remove", "--all")
    dvc(root, "exp", "remove", "--all-commits")
    shutil.rmtree(root / ".dvc" / "cache" / "runs", ignore_errors=True)
    shutil.copyfile(b.work / "sweep-baseline.db", root / "mlflow.db")
    dvc(root, "exp", "run", "--queue", "-S", SWEEP)
    path = b.work / f"sweep-{index}-j{jobs}.jsonl"
    load = os.getloadavg()[0]
    started_at = time.time()
    start = time.perf_counter()
    try:
        start_queue(root, jobs, timings_env(path), b.work / f"sweep-{index}-start.log")
        status = wait_for_queue(root, path, 4)
        wall = time.perf_counter() - start
    finally:
        wait_for_workers(root)
    done = status.count("Success")
    if "Failed" in status or done != 4:
        raise BenchError(f"sweep -j {jobs}: {done} of 4 experiments succeeded:\n{status}")
    records = read_records(path)
    log.info("sweep -j %d: %d experiments in %.1f s (load average before: %.1f)", jobs, done, wall, load)
    first_start = min(r["ended"] - r["total"] for r in records)
    last_end = max(r["ended"] for r in records)
    return {
        "to_first_stage_s": round(first_start - started_at, 2),  # workers starting, first temp copies
        "stages_span_s": round(last_end - first_start, 2),  # the part more workers can share
        "after_last_stage_s": round(started_at + wall - last_end, 2),  # collecting the last experiments
        "jobs": jobs,
        "wall_s": wall,
        "experiments": done,
        "load_before": round(load, 2),
        "stages_run": len(records),
        "stage_total_s": {s: median([r["total"] for r in records if r["stage"] == s]) for s in STAGES},
        "stages_s_per_experiment": sum(r["total"] for r in records) / done,
    }


def section(b: Bench) -> dict:
    order = b.alternating()
    heading(
        f"sweeps: `dvc exp run --queue -S {SWEEP}` (4 experiments), dvc queue start -j 1 against -j 2, "
        f"in the order -j {', -j '.join(map(str, order))}"
    )
    rows = project_params()["generate"]["rows"]
    root = b.repo("sweeps", rows)
    b.committed(root, "baseline")  # the baseline the experiments branch from: only train and later stages re-run
    shutil.copyfile(root / "mlflow.db", b.work / "sweep-baseline.db")
    runs = [sweep_once(b, root, jobs, i) for i, jobs in enumerate(order)]
    shutil.rmtree(root, ignore_errors=True)
    b.repos.pop("sweeps", None)

    wall = {jobs: median([r["wall_s"] for r in runs if r["jobs"] == jobs]) for jobs in (1, 2)}
    for r in runs:
        shown = ", ".join(f"{s} {v:.1f}" for s, v in r["stage_total_s"].items() if v == v)
        print(
            f"  -j {r['jobs']}: {r['wall_s']:.1f} s for {r['experiments']} experiments (load average before "
            f"{r['load_before']:.1f}) = {r['to_first_stage_s']:.1f} s to the first stage + "
            f"{r['stages_span_s']:.1f} s first to last stage + {r['after_last_stage_s']:.1f} s collecting; "
            f"median stage s: {shown}"
        )
    j1 = [r for r in runs if r["jobs"] == 1]
    per_experiment = median([r["wall_s"] / r["experiments"] for r in j1])
    in_stages = median([r["stages_s_per_experiment"] for r in j1])
    print(
        f"  -j 1, per experiment: {per_experiment:.1f} s, of which the stage processes {in_stages:.1f} s and "
        f"DVC's queue (temp copy, git, collection) {per_experiment - in_stages:.1f} s"
    )
    speedup = wall[1] / wall[2]
    b.figure(
        "sweep throughput, -j 2 / -j 1",
        speedup,
        f"{speedup:.2f}x ({wall[1]:.1f} s / {wall[2]:.1f} s, median of {len(j1)})",
        f">= {SWEEP_SPEEDUP_MIN}",
        speedup >= SWEEP_SPEEDUP_MIN,
    )
    span = {jobs: median([r["stages_span_s"] for r in runs if r["jobs"] == jobs]) for jobs in (1, 2)}
    b.figure(
        "sweep throughput from the first stage to the last, -j 2 / -j 1 (without queue start-up and collection)",
        span[1] / span[2],
        f"{span[1] / span[2]:.2f}x ({span[1]:.1f} s / {span[2]:.1f} s)",
        None,
        None,
    )
    return {"runs": runs, "wall_s": wall, "speedup": speedup, "span_s": span, "rows": rows}
