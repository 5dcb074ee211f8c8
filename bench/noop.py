"""Benchmark section noop: a no-op `dvc repro` against the cheapest DVC command."""

from __future__ import annotations

from bench.common import (
    NOOP_MAX,
    Bench,
    BenchError,
    dvc,
    heading,
    median,
    project_params,
    read_records,
    timings_env,
)


def section(b: Bench) -> dict:
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
