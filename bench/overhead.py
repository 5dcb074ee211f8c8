"""Benchmark section overhead: pipeline overhead against the same work in one process (bench/inprocess.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from bench.common import (
    FIXED_COST_MAX_S,
    OVERHEAD_MAX,
    PHASES,
    PROJECT,
    STAGES,
    Bench,
    by_stage,
    dvc,
    heading,
    log,
    median,
    project_params,
    read_records,
    run,
    timings_env,
)
from churn.tools.sandbox import project_env


def inprocess(root: Path, out: Path) -> tuple[float, dict]:
    """The one-process baseline (bench/inprocess.py) on `root`'s data and params: wall seconds and its record."""
    shutil.rmtree(out, ignore_errors=True)
    env = project_env(PYTHONPATH=os.pathsep.join([str(root / "src"), str(PROJECT)]))
    wall, result = run([sys.executable, "-m", "bench.inprocess", "--out", str(out)], root, env)
    return wall, json.loads(result.stdout.strip().splitlines()[-1])


def section(b: Bench) -> dict:
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
