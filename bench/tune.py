"""Benchmark section tune: `make tune WORKERS=2` against one worker on a PostgreSQL study."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.common import (
    TUNE_SPEEDUP_MIN,
    Bench,
    BenchError,
    heading,
    log,
    median,
    postgres_server,
    project_params,
    run,
)
from churn.tools import postgres
from churn.tools.sandbox import project_env

# The same trials in every run: this many values of model.C, drawn once (log-uniform over tune.space, seeded with
# tune.seed) and queued in each new study, which workers run before sampling any. No pruning.
TUNE_TRIALS = 30


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


def section(b: Bench) -> dict:
    order = b.alternating()
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
    b.committed(root, "featurized", "featurize")
    queued = queued_trials(settings)
    runs = []
    cpu = [cpu_parallelism()]
    # MLflow on the same server, as a team has it behind its tracking server: the repository's sqlite store
    # takes one writer at a time, and two workers would wait for each other's commits.
    with postgres_server() as server, postgres.database(server, "bench_tune_mlflow") as tracking:
        env = project_env(MLFLOW_TRACKING_URI=tracking)
        run([str(root / "bin" / "py"), "-m", "churn.tools.store", "init"], root, env)
        for i, workers in enumerate(order):
            with postgres.database(server, f"bench_tune_{i}") as storage:
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
