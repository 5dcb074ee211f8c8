"""Benchmarks: pipeline overhead against one-process compute, scaling, no-op repro, sweeps, tuning, fresh setup.

    python -m bench.run [--large] [--only overhead,noop,scaling,sweeps,tune,setup,server] [--repeats 3] [--name NAME]

Run from the repository root (`make bench`). Each section works in temporary repositories under bench/work/
(removed afterwards) and compares against a baseline measured in the same run, because this machine is
shared and noisy. Every figure is printed beside its target; all of them, with the machine's core count and
the stack's versions, go to bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from churn.tools.sandbox import make_repo, project_env

log = logging.getLogger("bench")

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "bench" / "work"
RESULTS = PROJECT / "bench" / "results"
SECTIONS = ("overhead", "noop", "scaling", "sweeps", "tune", "setup", "server")
SIZES = (10_000, 100_000, 1_000_000)
LARGE = 10_000_000
SWEEP = "model.C=0.01,0.1,1,10"
STAGES = ("prepare", "featurize", "train", "evaluate", "register")
PHASES = ("startup", "store", "compute", "logging", "write", "total")
PACKAGES = ("dvc", "mlflow", "scikit-learn", "xgboost-cpu", "pandas", "pyarrow", "numpy", "uv")
POLL_S = 2.0  # between `dvc queue status` calls while waiting for idle workers to exit

# The targets each figure is printed beside.
OVERHEAD_MAX = 1.5
FIXED_COST_MAX_S = 1.0
NOOP_MAX = 1.2
PER_ROW_MAX = 1.1
LARGE_MEMORY_MAX_GIB = 24.0
SWEEP_SPEEDUP_MIN = 1.6
TUNE_SPEEDUP_MIN = 1.6
COLD_SETUP_MAX_S = 120.0


class BenchError(Exception):
    """A command a benchmark needs failed."""


def project_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None):
    """Run a command; returns (wall seconds, result); a failure is a BenchError with the output's tail."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise BenchError(f"{' '.join(map(str, cmd))} (in {cwd}) exited {result.returncode}:\n{tail}")
    return elapsed, result


def dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    return run([sys.executable, "-m", "dvc", *args], root, env)


def timings_env(path: Path, **extra: str) -> dict[str, str]:
    """Environment in which every stage appends its phase timings to `path` (churn.timing)."""
    return project_env(CHURN_TIMINGS=str(path), **extra)


def start_warm_server() -> None:
    """Start this run's warm stage server (warmfork, through bin/py as the stages) and wait until it answers,
    so that no section's first stages run cold while it warms up. (A user's first `dvc repro` does.)"""
    cmd = [str(PROJECT / "bin" / "py"), "-m", "warmfork", "--start"]
    result = subprocess.run(cmd, cwd=PROJECT, env=project_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"the warm stage server did not start: {result.stderr.strip()}")


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_stage(records: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in records}


@dataclass
class Bench:
    work: Path
    repeats: int
    large: bool
    out: Path
    results: dict
    repos: dict[str, Path] = field(default_factory=dict)

    def repo(self, name: str, rows: int) -> Path:
        """A fresh git+DVC repository of the project (working tree's code, params.yaml as committed here)."""
        params = project_params()
        root = self.work / name
        log.info("%s: making a repository with %d rows", name, rows)
        make_repo(root, rows=rows, params={"train": params["train"]})
        self.repos[name] = root
        return root

    def figure(self, name: str, value: float | None, shown: str, target: str | None, passed: bool | None) -> None:
        """Print one figure beside its target and record it."""
        status = "INFO" if target is None else ("NOT RUN" if passed is None else ("PASS" if passed else "MISS"))
        suffix = "" if target is None else f" (target {target}) {status}"
        print(f"  {name}: {shown}{suffix}", flush=True)
        self.results["figures"].append(
            {"name": name, "value": value, "shown": shown, "target": target, "status": status}
        )

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=1) + "\n")


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


# --- overhead --------------------------------------------------------------------------------------


def inprocess(root: Path, out: Path) -> tuple[float, dict]:
    """The one-process baseline (bench/inprocess.py) on `root`'s data and params: wall seconds and its record."""
    shutil.rmtree(out, ignore_errors=True)
    env = project_env(PYTHONPATH=os.pathsep.join([str(root / "src"), str(PROJECT)]))
    wall, result = run([sys.executable, "-m", "bench.inprocess", "--out", str(out)], root, env)
    return wall, json.loads(result.stdout.strip().splitlines()[-1])


def overhead(b: Bench) -> dict:
    heading("overhead: dvc repro -f against the same work in one process (no tracking)")
    rows = project_params()["generate"]["rows"]
    root = b.repo("overhead", rows)
    first, _ = dvc(root, "repro", env=timings_env(b.work / "first.jsonl"))  # creates the store; not compared
    inprocess(root, b.work / "inprocess-out")  # warm the page cache the same way
    repro_s: list[float] = []
    cold_s: list[float] = []
    inproc_s: list[float] = []
    stage_runs: list[dict[str, dict]] = []
    cold_runs: list[dict[str, dict]] = []
    inproc_runs: list[dict] = []
    order = ("repro", "inprocess", "cold")
    for i in range(b.repeats):
        for what in order[i % 3 :] + order[: i % 3]:
            if what in ("repro", "cold"):
                path = b.work / f"overhead-{what}-{i}.jsonl"
                env = timings_env(path, **({"WARMFORK": "0"} if what == "cold" else {}))
                wall, _ = dvc(root, "repro", "-f", env=env)
                (repro_s if what == "repro" else cold_s).append(wall)
                (stage_runs if what == "repro" else cold_runs).append(by_stage(read_records(path)))
            else:
                wall, record = inprocess(root, b.work / "inprocess-out")
                inproc_s.append(wall)
                inproc_runs.append(record)
            log.info("overhead %d/%d: %s %.1f s", i + 1, b.repeats, what, wall)

    stages = {
        stage: {p: median([records[stage].get(p, 0.0) for records in stage_runs]) for p in (*PHASES, "peak_rss_mb")}
        for stage in STAGES
    }
    work = {
        stage: median([r["steps"][stage]["compute"] + r["steps"][stage]["write"] for r in inproc_runs])
        for stage in STAGES
    }
    for stage in STAGES:
        stages[stage]["work_in_process"] = work[stage]
        stages[stage]["fixed"] = stages[stage]["total"] - work[stage]
    repro, one = median(repro_s), median(inproc_s)
    dvc_own = median(
        [wall - sum(r["total"] for r in records.values()) for wall, records in zip(repro_s, stage_runs, strict=True)]
    )
    imports = median([r["imports"] for r in inproc_runs])

    print(f"  per stage, median of {b.repeats} runs (s); fixed = total - the same stage's work in one process")
    print(f"  {'stage':<10}" + "".join(f"{p:>9}" for p in PHASES) + f"{'work':>9}{'fixed':>9}{'peak MB':>9}")
    for stage, s in stages.items():
        cells = "".join(f"{s[p]:9.2f}" for p in PHASES)
        print(f"  {stage:<10}{cells}{s['work_in_process']:9.2f}{s['fixed']:9.2f}{s['peak_rss_mb']:9.0f}")
    print(f"  {'dvc':<10}{'':>45}{dvc_own:9.2f}   (dvc's own time: its startup, hashing, dvc.lock)")
    print(f"  (first dvc repro, which also creates the MLflow store and experiment: {first:.1f} s, not compared)")
    one_work = sum(work.values())
    print(f"  one process: {one:.2f} s = interpreter and imports {imports:.2f} s + work {one_work:.2f} s + exit")
    # Where the difference goes: every phase beyond the baseline's, summed over the stages.
    extra = {
        "interpreter and imports (5 processes vs 1)": sum(s["startup"] for s in stages.values()) - imports,
        "store open": sum(s["store"] for s in stages.values()),
        "logging": sum(s["logging"] for s in stages.values()),
        "compute and write beyond the work (imports in main, re-reads)": sum(
            s["compute"] + s["write"] - s["work_in_process"] for s in stages.values()
        ),
        "dvc": dvc_own,
    }
    print(f"  the {repro - one:.1f} s difference: " + "; ".join(f"{k} {v:.1f} s" for k, v in extra.items()))

    cold = median(cold_s)
    cold_totals = {stage: median([records[stage]["total"] for records in cold_runs]) for stage in STAGES}
    print(
        f"  without the warm runner (WARMFORK=0): dvc repro -f {cold:.1f} s; stage totals "
        + ", ".join(f"{stage} {total:.2f}" for stage, total in cold_totals.items())
    )

    ratio = repro / one
    b.figure(
        "overhead ratio (dvc repro -f / one process)",
        ratio,
        f"{ratio:.2f}x ({repro:.1f} s / {one:.1f} s, {rows} rows)",
        f"<= {OVERHEAD_MAX}",
        ratio <= OVERHEAD_MAX,
    )
    b.figure(
        "overhead ratio without the warm stage runner (WARMFORK=0)",
        cold / one,
        f"{cold / one:.2f}x ({cold:.1f} s / {one:.1f} s)",
        None,
        None,
    )
    worst = max(STAGES, key=lambda s: stages[s]["fixed"])
    b.figure(
        f"per-stage fixed cost, worst stage ({worst})",
        stages[worst]["fixed"],
        f"{stages[worst]['fixed']:.2f} s (" + ", ".join(f"{s} {stages[s]['fixed']:.2f}" for s in STAGES) + ")",
        f"<= {FIXED_COST_MAX_S:g} s",
        stages[worst]["fixed"] <= FIXED_COST_MAX_S,
    )
    return {
        "rows": rows,
        "first_repro_s": first,
        "repro_s": repro_s,
        "inprocess_s": inproc_s,
        "ratio": ratio,
        "cold_repro_s": cold_s,
        "cold_ratio": cold / one,
        "cold_stage_totals": cold_totals,
        "stages": stages,
        "dvc_s": dvc_own,
        "inprocess_imports_s": imports,
        "difference_s": extra,
        "inprocess_runs": inproc_runs,
    }


# --- no-op --------------------------------------------------------------------------------------


def noop(b: Bench) -> dict:
    heading("no-op: dvc repro with everything up to date against dvc status")
    root = b.repos.get("overhead")
    if root is None:
        root = b.repo("overhead", project_params()["generate"]["rows"])
        dvc(root, "repro")
    path = b.work / "noop.jsonl"
    env = timings_env(path)
    dvc(root, "status", env=env)
    dvc(root, "repro", env=env)
    repro_s: list[float] = []
    status_s: list[float] = []
    for i in range(max(5, b.repeats)):
        for what in ("repro", "status") if i % 2 == 0 else ("status", "repro"):
            wall, _ = dvc(root, what, env=env)
            (repro_s if what == "repro" else status_s).append(wall)
    ran = [r["stage"] for r in read_records(path)]
    if ran:
        raise BenchError(f"the no-op dvc repro ran stages {ran}: the pipeline was not up to date")
    repro, status = median(repro_s), median(status_s)
    ratio = repro / status
    b.figure(
        "no-op dvc repro / dvc status",
        ratio,
        f"{ratio:.2f}x ({repro:.2f} s / {status:.2f} s, median of {len(repro_s)})",
        f"<= {NOOP_MAX}",
        ratio <= NOOP_MAX,
    )
    return {"repro_s": repro_s, "status_s": status_s, "ratio": ratio}


# --- scaling --------------------------------------------------------------------------------------


def scaling(b: Bench) -> dict:
    sizes = (*SIZES, LARGE) if b.large else SIZES
    heading(f"scaling: dvc repro on {', '.join(f'{n:,}' for n in sizes)} rows (fresh repositories)")
    runs = []
    for rows in sizes:
        start = time.perf_counter()
        root = b.repo(f"scale-{rows}", rows)
        made = time.perf_counter() - start
        path = b.work / f"scale-{rows}.jsonl"
        wall, _ = dvc(root, "repro", env=timings_env(path))
        stages = by_stage(read_records(path))
        peak_stage = max(stages, key=lambda s: stages[s]["peak_rss_mb"])
        runs.append(
            {
                "rows": rows,
                "wall_s": wall,
                "data_s": made,
                "work_s": sum(s["compute"] + s["write"] for s in stages.values()),
                "peak_rss_mb": stages[peak_stage]["peak_rss_mb"],
                "peak_stage": peak_stage,
                "stages": stages,
            }
        )
        log.info("scaling: %d rows in %.1f s (repository and data %.1f s)", rows, wall, made)
        shutil.rmtree(root, ignore_errors=True)
        b.repos.pop(f"scale-{rows}", None)
    base = runs[0]
    previous = None
    for r in runs:
        r["per_row_us"] = r["wall_s"] / r["rows"] * 1e6
        r["per_row_vs_smallest"] = r["per_row_us"] / base["per_row_us"]
        # The cost of the rows added since the previous size: the fixed costs cancel out.
        r["marginal_us"] = (
            (r["wall_s"] - previous["wall_s"]) / (r["rows"] - previous["rows"]) * 1e6 if previous else float("nan")
        )
        previous = r

    print(f"  wall = dvc repro (fresh repository: the store is created too); per row relative to {base['rows']:,}")
    print("  rows; marginal = extra wall time per added row since the previous size")
    head = f"  {'rows':>11}{'wall s':>9}{'us/row':>9}{'per row':>9}{'marginal':>9}{'work s':>9}"
    print(head + "".join(f"{s[:9]:>10}" for s in STAGES) + "   (peak MB per stage)")
    for r in runs:
        peaks = "".join(f"{r['stages'].get(s, {}).get('peak_rss_mb', float('nan')):10.0f}" for s in STAGES)
        print(
            f"  {r['rows']:>11,}{r['wall_s']:9.1f}{r['per_row_us']:9.1f}{r['per_row_vs_smallest']:9.3f}"
            f"{r['marginal_us']:9.1f}{r['work_s']:9.1f}{peaks}"
        )
    found = {r["rows"]: r for r in runs}
    if 1_000_000 in found and 100_000 in found:
        ratio = found[1_000_000]["per_row_us"] / found[100_000]["per_row_us"]
        b.figure(
            "time per row, 1M rows / 100k rows",
            ratio,
            f"{ratio:.2f}x ({found[1_000_000]['per_row_us']:.1f} / {found[100_000]['per_row_us']:.1f} us per row)",
            f"<= {PER_ROW_MAX}",
            ratio <= PER_ROW_MAX,
        )
    for rows in (1_000_000, LARGE):
        if rows in found:
            r = found[rows]
            gib = r["peak_rss_mb"] / 1024
            b.figure(
                f"peak memory at {rows:,} rows ({r['peak_stage']}; wall {r['wall_s']:.0f} s)",
                gib,
                f"{gib:.2f} GiB",
                f"<= {LARGE_MEMORY_MAX_GIB:g} GiB" if rows == LARGE else None,
                gib <= LARGE_MEMORY_MAX_GIB if rows == LARGE else None,
            )
    if LARGE not in found and 1_000_000 in found and 100_000 in found:
        small, big = found[100_000]["peak_rss_mb"], found[1_000_000]["peak_rss_mb"]
        estimate = (big + (big - small) * (LARGE - 1_000_000) / 900_000) / 1024
        b.figure(
            f"peak memory at {LARGE:,} rows",
            None,
            f"not run (--large); {estimate:.1f} GiB extrapolated from 100k and 1M rows",
            f"<= {LARGE_MEMORY_MAX_GIB:g} GiB",
            None,
        )
    return {"runs": runs}


# --- sweeps --------------------------------------------------------------------------------------


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


def sweeps(b: Bench) -> dict:
    order = (1, 2, 2, 1) if b.repeats >= 2 else (1, 2)
    heading(
        f"sweeps: `dvc exp run --queue -S {SWEEP}` (4 experiments), dvc queue start -j 1 against -j 2, "
        f"in the order -j {', -j '.join(map(str, order))}"
    )
    rows = project_params()["generate"]["rows"]
    root = b.repo("sweeps", rows)
    dvc(root, "repro")  # the baseline the experiments branch from: only train and later stages re-run
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "baseline"], root)
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


# --- tune ---------------------------------------------------------------------------------------

# The same trials in every run: this many values of model.C, drawn once (log-uniform over tune.space, seeded with
# tune.seed) and queued in each new study, which workers run before sampling any. No pruning.
TUNE_TRIALS = 30


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL role that may create databases: CHURN_BENCH_POSTGRES_URI (or .ci/run's
    CHURN_TEST_POSTGRES_URI), else a throwaway cluster from the installed binaries, on loopback, for the block."""
    import secrets
    import socket

    if uri := os.environ.get("CHURN_BENCH_POSTGRES_URI") or os.environ.get("CHURN_TEST_POSTGRES_URI"):
        yield uri
        return
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        raise BenchError("no PostgreSQL: install postgresql-15, or set CHURN_BENCH_POSTGRES_URI to a server's URI")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp"))
    token = secrets.token_hex(16)
    (root / "pw").write_text(token + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        names = {user.pw_name for user in pwd.getpwall()}
        owner = pwd.getpwnam("postgres" if "postgres" in names else "nobody")
        for path in (root, root / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", owner.pw_name, "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data, pg_ctl = root / "data", [*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data")]
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    init = [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "bench", f"--pwfile={root / 'pw'}"]
    init += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"]
    try:
        run(init, root)
        run([*pg_ctl, "start", "-l", str(root / "log"), "-w", "-o", options], root)
        yield f"postgresql+psycopg2://bench:{token}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "stop", "-m", "fast"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def new_database(server: str, name: str) -> Iterator[str]:
    """An empty database `name` on the server for the block (dropped afterwards), as a SQLAlchemy URI."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")

    def execute(statement: str) -> None:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(statement))

    execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


BUSY_LOOP = "import time; t = time.perf_counter(); sum(i * i for i in range(25 * 10**6)); print(time.perf_counter()-t)"


def cpu_parallelism() -> float:
    """How much more CPU two processes get than one, now: a busy loop alone, then two at once (2.0 on two idle
    cores). On a shared machine the tuning ratio cannot exceed it."""
    alone = float(subprocess.run([sys.executable, "-c", BUSY_LOOP], capture_output=True, text=True).stdout)
    pair = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    together = max(float(proc.communicate()[0]) for proc in pair)
    return 2 * alone / together


def queued_trials(settings: dict) -> list[dict]:
    """TUNE_TRIALS parameter sets of logistic regression, from tune.space and tune.seed."""
    import math
    import random

    bounds = settings["tune"]["space"]["logistic_regression"]["C"]
    rng = random.Random(settings["tune"]["seed"])
    low, high = math.log(bounds["low"]), math.log(bounds["high"])
    return [{"model.C": math.exp(rng.uniform(low, high))} for _ in range(TUNE_TRIALS)]


def tune_once(root: Path, storage: str, workers: int, queued: list[dict], env: dict[str, str]) -> dict:
    """`make tune WORKERS=n` on a new study holding the queued trials: its wall time and its trials' throughput
    (from the first trial's start to the last one's end, Optuna's timestamps)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name="bench", direction="maximize")
    for params in queued:
        study.enqueue_trial(params)
    command = [str(root / "bin" / "py"), "-m", "churn.tools.tune", "--no-progress", "--trials", str(len(queued))]
    load = os.getloadavg()[0]
    wall, _ = run([*command, "--storage", storage, "--workers", str(workers)], root, env)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < len(queued):
        raise BenchError(f"{workers} workers completed {len(done)} of {len(queued)} trials")
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    log.info("tune, %d workers: %d trials in %.1f s (command %.1f s)", workers, len(done), span, wall)
    return {
        "workers": workers,
        "wall_s": wall,
        "trials": len(done),
        "span_s": span,
        "per_minute": len(done) / span * 60,
        "trial_s": median([(t.datetime_complete - t.datetime_start).total_seconds() for t in done]),
        "load_before": round(load, 2),
        "params": sorted(t.params["model.C"] for t in done),
    }


def tune(b: Bench) -> dict:
    order = (1, 2, 2, 1) if b.repeats >= 2 else (1, 2)
    heading(
        f"tune: make tune WORKERS=2 against WORKERS=1, the same {TUNE_TRIALS} trials on a new PostgreSQL study each "
        f"time, MLflow on PostgreSQL too, in the order {', '.join(map(str, order))} workers"
    )
    rows = project_params()["generate"]["rows"]
    root = b.repo("tune", rows)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    pruner = {"n_startup_trials": TUNE_TRIALS, "n_warmup_steps": 0}
    settings["tune"].update(family="logistic_regression", study_name="bench", pruner=pruner)
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    dvc(root, "repro", "featurize")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "featurized"], root)
    queued = queued_trials(settings)
    runs = []
    cpu = [cpu_parallelism()]
    # MLflow on the same server, as a team has it behind its tracking server: the repository's sqlite store
    # takes one writer at a time, and two workers would wait for each other's commits.
    with postgres_server() as server, new_database(server, "bench_tune_mlflow") as tracking:
        env = project_env(MLFLOW_TRACKING_URI=tracking)
        run([str(root / "bin" / "py"), "-m", "churn.tools.store", "init"], root, env)
        for i, workers in enumerate(order):
            with new_database(server, f"bench_tune_{i}") as storage:
                runs.append(tune_once(root, storage, workers, queued, env))
    cpu.append(cpu_parallelism())
    shutil.rmtree(root, ignore_errors=True)
    b.repos.pop("tune", None)

    if any(r["params"] != runs[0]["params"] for r in runs):
        raise BenchError("the runs scored different trials")
    for r in runs:
        print(
            f"  {r['workers']} worker(s): {r['trials']} trials in {r['span_s']:.1f} s from the first trial's start to "
            f"the last one's end = {r['per_minute']:.1f} trials/min (median trial {r['trial_s']:.2f} s); whole "
            f"command {r['wall_s']:.1f} s (load average before {r['load_before']:.1f})"
        )
    rate = {n: median([r["per_minute"] for r in runs if r["workers"] == n]) for n in (1, 2)}
    wall = {n: median([r["wall_s"] for r in runs if r["workers"] == n]) for n in (1, 2)}
    speedup = rate[2] / rate[1]
    b.figure(
        "tuning throughput, 2 workers / 1 (trials per minute, one PostgreSQL study)",
        speedup,
        f"{speedup:.2f}x ({rate[2]:.1f} / {rate[1]:.1f} trials/min, median of {len(order) // 2})",
        f">= {TUNE_SPEEDUP_MIN}",
        speedup >= TUNE_SPEEDUP_MIN,
    )
    b.figure(
        "CPU two processes get / one, a busy loop before and after (2.0 on two idle cores)",
        median(cpu),
        f"{cpu[0]:.2f}x before, {cpu[1]:.2f}x after",
        None,
        None,
    )
    b.figure(
        "make tune wall time, 1 worker / 2 (with start-up, data, MLflow, plots)",
        wall[1] / wall[2],
        f"{wall[1] / wall[2]:.2f}x ({wall[1]:.1f} s / {wall[2]:.1f} s)",
        None,
        None,
    )
    return {"runs": runs, "per_minute": rate, "wall_s": wall, "speedup": speedup, "cpu_parallelism": cpu, "rows": rows}


# --- setup --------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no active venv, no project or DVC/MLflow variables, no make state."""
    venv_bins = {str(Path(sys.executable).parent), str(PROJECT / ".venv" / "bin")}
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith(("DVC_", "MLFLOW_", "CHURN_"))}
    env["WARMFORK_DIR"] = os.environ["WARMFORK_DIR"]  # this run's warm stage servers, stopped at its end
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    env.update(extra)
    return env


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def setup(b: Bench) -> dict:
    heading("setup: git clone + make run with a warm and with an empty package cache")
    head = run(["git", "rev-parse", "--short", "HEAD"], PROJECT, clean_env())[1].stdout.strip()
    out: dict[str, dict] = {}
    for cache in ("warm", "cold"):
        dest = b.work / f"setup-{cache}"
        extra: dict[str, str] = {}
        if cache == "cold":
            empty = b.work / "empty-cache"
            empty.mkdir()
            extra = {"UV_CACHE_DIR": str(empty), "PIP_NO_CACHE_DIR": "1"}
        env = clean_env(GIT_AUTHOR_NAME="bench", GIT_COMMITTER_NAME="bench", **extra)
        try:
            run(["git", "clone", "-q", str(PROJECT), str(dest)], b.work, env)
            install, _ = run(["make", "setup"], dest, env, timeout=3600)
            pipeline, _ = run(["make", "run"], dest, env, timeout=3600)
            venv_mb = tree_bytes(dest / ".venv") / 2**20
        finally:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(b.work / "empty-cache", ignore_errors=True)
        out[cache] = {"install_s": install, "pipeline_s": pipeline, "total_s": install + pipeline, "venv_mb": venv_mb}
        log.info("setup (%s cache): install %.1f s, make run %.1f s", cache, install, pipeline)
    for cache, r in out.items():
        print(
            f"  {cache} cache: {r['total_s']:.1f} s = make setup {r['install_s']:.1f} s "
            f"+ the rest of make run (data, store, dvc repro) {r['pipeline_s']:.1f} s; .venv {r['venv_mb']:.0f} MB"
        )
    cold, warm = out["cold"]["total_s"], out["warm"]["total_s"]
    b.figure(
        f"fresh clone (HEAD {head}) + make run, empty package cache",
        cold,
        f"{cold:.0f} s ({cold / warm:.2f}x the warm cache's {warm:.0f} s)",
        f"< {COLD_SETUP_MAX_S:.0f} s",
        cold < COLD_SETUP_MAX_S,
    )
    return {**out, "commit": head}


# --- the run --------------------------------------------------------------------------------------


def machine() -> dict:
    import psutil

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], PROJECT)[1].stdout
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": run(["git", "rev-parse", "HEAD"], PROJECT)[1].stdout.strip(),
        "tracked_files_modified": bool(status.strip()),
    }


def server(b: Bench) -> dict:
    """The team server against the local store (bench/server.py)."""
    from bench.server import section

    return section(b)


SECTION_RUNNERS = {
    "overhead": overhead,
    "noop": noop,
    "scaling": scaling,
    "sweeps": sweeps,
    "tune": tune,
    "setup": setup,
    "server": server,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help=f"add {LARGE:,} rows to the scaling section")
    parser.add_argument("--huge", action="store_true", help="only the large-data path: 10M, 100M rows")
    parser.add_argument("--only", help=f"comma-separated sections (default: all of {','.join(SECTIONS)})")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions in overhead (default 3)")
    parser.add_argument("--name", help="results file name (default: bench-<date>-<time>)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories under bench/work/")
    args = parser.parse_args(argv)
    if args.huge:  # its own module: an hour or more, and no section of the default run
        from bench.huge import main as huge

        return huge([*(["--name", args.name] if args.name else []), *(["--keep"] if args.keep else [])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")

    started = datetime.datetime.now()
    name = args.name or f"bench-{started:%Y%m%d-%H%M}"
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    # Warm stage servers (warmfork) of this run only, in a private directory, stopped at its end.
    warm_dir = tempfile.mkdtemp(prefix="warmfork-bench-")
    os.environ["WARMFORK_DIR"] = warm_dir
    results = {
        "name": name,
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "figures": [],
        "sections": {},
        "errors": {},
    }
    bench = Bench(work=work, repeats=args.repeats, large=args.large, out=RESULTS / f"{name}.json", results=results)
    m = results["machine"]
    print(
        f"bench {name}: {m['nproc']} cores, load {m['loadavg_at_start']}, python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    )
    try:
        start_warm_server()
        for section in sections:
            start = time.perf_counter()
            try:
                results["sections"][section] = SECTION_RUNNERS[section](bench)
            except (BenchError, AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
                results["errors"][section] = str(exc)
                print(f"  {section} FAILED: {exc}", flush=True)
            results["sections"].setdefault(section, {})["elapsed_s"] = round(time.perf_counter() - start, 1)
            bench.save()
    finally:
        subprocess.run([sys.executable, "-m", "warmfork", "--stop", "--all"], capture_output=True, check=False)
        shutil.rmtree(warm_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = (datetime.datetime.now() - started).total_seconds()
    results["elapsed_s"] = round(elapsed, 1)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    bench.save()

    heading(f"summary ({elapsed / 60:.1f} min; {bench.out.relative_to(PROJECT)})")
    for f in results["figures"]:
        target = f" (target {f['target']})" if f["target"] else ""
        print(f"  {f['status']:<8}{f['name']}: {f['shown']}{target}")
    for section, error in results["errors"].items():
        print(f"  FAILED  {section}: {error.splitlines()[0]}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
