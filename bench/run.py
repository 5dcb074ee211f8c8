"""Benchmarks: pipeline overhead against one-process compute, scaling, no-op repro, sweeps, tuning, fresh setup.

    python -m bench.run [--large] [--only overhead,noop,scaling,sweeps,tune,setup,server] [--repeats 3] [--name NAME]

Run from the repository root (`make bench`). Each section works in temporary repositories under bench/work/
(removed afterwards) and compares against a baseline measured in the same run, because this machine is
shared and noisy. Every figure is printed beside its target; all of them, with the machine's core count and
the stack's versions, go to bench/results/<name>.json. Each section is a module of this package (bench.overhead,
bench.noop, bench.scaling, bench.sweeps, bench.tune, bench.fresh_clone for `setup`, bench.server); what they share
is in bench.common.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.common import LARGE, PROJECT, RESULTS, WORK, Bench, BenchError, heading, run, start_warm_server

PACKAGES = ("dvc", "mlflow", "scikit-learn", "xgboost-cpu", "pandas", "pyarrow", "numpy", "uv")


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


# The sections, in the order they run: each one a module of this package with a function `section(b: Bench)`.
SECTION_MODULES = {
    "overhead": "bench.overhead",
    "noop": "bench.noop",
    "scaling": "bench.scaling",
    "sweeps": "bench.sweeps",
    "tune": "bench.tune",
    "setup": "bench.fresh_clone",
    "server": "bench.server",
}
SECTIONS = tuple(SECTION_MODULES)


def run_section(name: str, b: Bench) -> dict:
    return importlib.import_module(SECTION_MODULES[name]).section(b)


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
                results["sections"][section] = run_section(section, bench)
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
