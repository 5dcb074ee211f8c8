"""Benchmark section scaling: the pipeline's cost per row from 10k to 1M rows (10M with --large)."""

from __future__ import annotations

import shutil
import time

from bench.common import (
    LARGE,
    LARGE_MEMORY_MAX_GIB,
    PER_ROW_MAX,
    SIZES,
    STAGES,
    Bench,
    by_stage,
    dvc,
    heading,
    log,
    read_records,
    timings_env,
)


def section(b: Bench) -> dict:
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
