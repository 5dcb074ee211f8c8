"""Large data end to end: `dvc repro` of the xgboost family on 10M and 100M generated rows.

    python -m bench.huge [--sizes 10000000,100000000] [--name NAME] [--keep]      (make bench BENCH_ARGS="--huge")

Each size gets a fresh git + DVC repository under bench/work/ (the working tree's code and params.yaml, with
model.type xgboost and resources.external_memory_rows at 1M so that both sizes train xgboost from external
memory) whose DVC cache links files instead of copying them
(cache.type reflink,hardlink,copy). It records the raw table's generation, `dvc add`, then `dvc repro` with every
stage's wall time and peak RSS (CHURN_TIMINGS), `dvc status` afterwards (DVC's hash cache), and the disk used;
then time per row at the largest size against the smallest. Results: bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from churn.tools.sandbox import copy_project, project_env

log = logging.getLogger("bench.huge")

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "bench" / "work"
RESULTS = PROJECT / "bench" / "results"
SIZES = (10_000_000, 100_000_000)
STAGES = ("prepare", "featurize", "train", "evaluate", "register")
# The targets each figure is printed beside.
MEMORY_MAX_GIB = 24.0
MEMORY_AIM_GIB = 8.0
PER_ROW_MAX = 1.2
LARGE_PATH = {"external_memory_rows": 1_000_000}


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 4 * 3600) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} (in {cwd}) exited {result.returncode}:\n{tail}")
    return wall, result.stdout


def disk_bytes(path: Path) -> int:
    """Bytes on disk under `path`, each hard-linked file counted once (as `du` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            stat = item.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def apparent_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def make_repo(
    root: Path, rows: int, env: dict[str, str], raw_from: Path | None = None, trees: int | None = None
) -> dict:
    """The project at `root` with `rows` generated rows tracked by DVC (or `raw_from`, hard-linked: a table
    generated beforehand by `python -m churn.tools.generate`); returns the setup's timings."""
    shutil.rmtree(root, ignore_errors=True)
    copy_project(root)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    settings["model"]["type"] = "xgboost"
    settings["resources"].update(LARGE_PATH)
    if trees is not None:
        settings["model"]["xgboost"]["n_estimators"] = trees
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    raw = settings["data"]["raw_path"]
    python = sys.executable
    if raw_from is None:
        generate_s, _ = run([python, "-m", "churn.tools.generate", "--rows", str(rows), "--out", raw], root, env)
    else:
        deadline = time.monotonic() + 3600
        while not raw_from.exists() and time.monotonic() < deadline:  # still being generated (renamed when done)
            time.sleep(10)
        (root / raw).parent.mkdir(parents=True, exist_ok=True)
        os.link(raw_from, root / raw)
        generate_s = None
    dvc = [python, "-m", "dvc"]
    for command in (
        ["git", "init", "-q", "-b", "main"],
        [*dvc, "init", "-q"],
        [*dvc, "config", "core.analytics", "false"],
        [*dvc, "config", "cache.type", "reflink,hardlink,copy"],
        [*dvc, "remote", "add", "-d", "local", "../dvc-storage"],
    ):
        run(command, root, env)
    add_s, _ = run([*dvc, "add", "-q", raw], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "project"], root, env)
    run([python, "-m", "churn.tools.store", "init"], root, env)
    size = (root / raw).stat().st_size
    return {"generate_s": generate_s and round(generate_s, 1), "dvc_add_s": round(add_s, 1), "raw_bytes": size}


def one_size(rows: int, work: Path, raw_from: Path | None = None, trees: int | None = None) -> dict:
    root = work / f"huge-{rows}"
    timings = work / f"huge-{rows}.jsonl"
    timings.unlink(missing_ok=True)
    env = project_env(WARMFORK="0")  # one interpreter per stage: start-up is noise at this size
    log.info("%d rows: generating the raw table and the repository", rows)
    setup = make_repo(root, rows, env, raw_from, trees)
    log.info("%d rows: dvc repro", rows)
    wall, _ = run([sys.executable, "-m", "dvc", "repro"], root, {**env, "CHURN_TIMINGS": str(timings)})
    stages = {r["stage"]: r for r in (json.loads(line) for line in timings.read_text().splitlines())}
    status_s = [run([sys.executable, "-m", "dvc", "status"], root, env)[0] for _ in range(3)]
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    cv = json.loads((root / "reports" / "cv_metrics.json").read_text())
    cache = root / ".dvc" / "cache"
    result = {
        "rows": rows,
        **setup,
        "repro_s": round(wall, 1),
        "per_row_us": round(wall / rows * 1e6, 3),
        "stages": {
            s: {
                "total_s": stages[s]["total"],
                "peak_rss_gib": round(stages[s]["peak_rss_mb"] / 1024, 2),
                "per_row_us": round(stages[s]["total"] / rows * 1e6, 3),
                **{k: v for k, v in stages[s].items() if k not in ("stage", "total", "peak_rss_mb", "ended")},
            }
            for s in STAGES
            if s in stages
        },
        "dvc_status_s": [round(s, 2) for s in status_s],
        "disk": {
            "repository_on_disk_gib": round(disk_bytes(root) / 2**30, 2),
            "workspace_and_cache_apparent_gib": round(apparent_bytes(root) / 2**30, 2),
            "cache_apparent_gib": round(apparent_bytes(cache) / 2**30, 2),
        },
        "test_metrics": metrics,
        "cv_metrics": {k: v for k, v in cv.items() if not k.endswith("_std")},
    }
    log.info("%d rows: dvc repro %.0f s; %s", rows, wall, json.dumps(result["stages"]))
    return result


def figures(results: dict) -> list[dict]:
    out = []
    runs = results["runs"]
    for r in runs:
        peak = max(r["stages"].values(), key=lambda s: s["peak_rss_gib"])
        stage = next(s for s, v in r["stages"].items() if v is peak)
        gib = peak["peak_rss_gib"]
        out.append(
            {
                "name": f"peak RSS of any stage at {r['rows']:,} rows ({stage})",
                "value": gib,
                "target": f"<= {MEMORY_MAX_GIB:g} GiB (aim <= {MEMORY_AIM_GIB:g})",
                "status": "PASS"
                if gib <= MEMORY_AIM_GIB
                else ("PASS (over the aim)" if gib <= MEMORY_MAX_GIB else "MISS"),
            }
        )
    if len(runs) >= 2:
        small, big = runs[0], runs[-1]
        ratio = big["per_row_us"] / small["per_row_us"]
        out.append(
            {
                "name": f"time per row, {big['rows']:,} / {small['rows']:,} rows (dvc repro wall)",
                "value": round(ratio, 3),
                "shown": f"{big['per_row_us']:.2f} / {small['per_row_us']:.2f} us per row",
                "target": f"<= {PER_ROW_MAX}",
                "status": "PASS" if ratio <= PER_ROW_MAX else "MISS",
            }
        )
        for stage in STAGES:
            if stage in big["stages"] and stage in small["stages"]:
                out.append(
                    {
                        "name": f"time per row of {stage}, {big['rows']:,} / {small['rows']:,} rows",
                        "value": round(big["stages"][stage]["per_row_us"] / small["stages"][stage]["per_row_us"], 3),
                        "target": None,
                        "status": "INFO",
                    }
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.huge", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated row counts, smallest first")
    parser.add_argument("--name", help="results file name (default: bench-<date>-<time>-huge)")
    parser.add_argument("--keep", action="store_true", help="keep the repositories under bench/work/")
    parser.add_argument("--trees", type=int, help="model.xgboost.n_estimators at every size (default: params.yaml)")
    parser.add_argument("--raw", type=Path, help="a generated raw CSV for the largest size (hard-linked, not copied)")
    parser.add_argument("--reference", type=Path, help="an earlier results file whose runs come first (e.g. 10M)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    started = datetime.datetime.now()
    name = args.name or f"bench-{started:%Y%m%d-%H%M}-huge"
    sizes = [int(s) for s in args.sizes.split(",")]
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    from bench.run import machine

    results = {
        "name": name,
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.huge " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "params": {
            "model.type": "xgboost",
            "model.xgboost.n_estimators": args.trees or "params.yaml",
            **{f"resources.{k}": v for k, v in LARGE_PATH.items()},
        },
        "runs": [],
        "errors": {},
    }
    out = RESULTS / f"{name}.json"
    if args.reference:
        earlier = json.loads(args.reference.read_text())
        results["reference"] = {"file": str(args.reference.relative_to(PROJECT)), "started": earlier["started"]}
        results["runs"] = [{**r, "from": results["reference"]["file"]} for r in earlier["runs"]]
    try:
        for rows in sizes:
            try:
                raw = args.raw if rows == sizes[-1] else None
                results["runs"].append(one_size(rows, work, raw, args.trees))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                results["errors"][str(rows)] = str(exc)
                log.error("%d rows failed: %s", rows, exc)
                break
            finally:
                if not args.keep:
                    shutil.rmtree(work / f"huge-{rows}", ignore_errors=True)
            results["figures"] = figures(results)
            out.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = round((datetime.datetime.now() - started).total_seconds(), 1)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["figures"] = figures(results)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n== huge ({results['elapsed_s'] / 60:.1f} min; {out.relative_to(PROJECT)})")
    for f in results["figures"]:
        target = f" (target {f['target']})" if f.get("target") else ""
        print(f"  {f['status']:<8}{f['name']}: {f.get('shown', f['value'])}{target}")
    for size, error in results["errors"].items():
        print(f"  FAILED  {size} rows: {error.splitlines()[0]}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
