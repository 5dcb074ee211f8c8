"""What every benchmark section shares: the targets, running commands, the temporary repositories, printing
and recording figures, a PostgreSQL server."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from churn.tools.sandbox import make_repo, project_env

log = logging.getLogger("bench")

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "bench" / "work"
RESULTS = PROJECT / "bench" / "results"
SIZES = (10_000, 100_000, 1_000_000)
LARGE = 10_000_000
SWEEP = "model.C=0.01,0.1,1,10"
STAGES = ("prepare", "featurize", "train", "evaluate", "register")
PHASES = ("startup", "store", "compute", "logging", "write", "total")
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

    def committed(self, root: Path, message: str, *stage: str) -> None:
        """`dvc repro [stage]` in `root`, then commit everything: the baseline an experiment branches from."""
        dvc(root, "repro", *stage)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", message], root)

    def alternating(self) -> tuple[int, ...]:
        """1, 2, 2, 1 (workers or jobs): the two settings alternate, so a change in the machine's load hits
        both; 1, 2 with --repeats 1."""
        return (1, 2, 2, 1) if self.repeats >= 2 else (1, 2)

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


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL role that may create databases: CHURN_BENCH_POSTGRES_URI (or .ci/run's
    CHURN_TEST_POSTGRES_URI), else a throwaway cluster from the installed binaries, on loopback, for the block
    (churn.tools.postgres, which the tests use too)."""
    from churn.errors import ChurnError
    from churn.tools import postgres

    try:
        with postgres.server("CHURN_BENCH_POSTGRES_URI", "CHURN_TEST_POSTGRES_URI") as uri:
            yield uri
    except ChurnError as exc:
        raise BenchError(str(exc)) from exc
