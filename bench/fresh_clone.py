"""Benchmark section setup: git clone + make run with a warm and with an empty package cache."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bench.common import (
    COLD_SETUP_MAX_S,
    PROJECT,
    Bench,
    heading,
    log,
    run,
)


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


def section(b: Bench) -> dict:
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
