"""DVC experiments as data: `dvc exp show --json` flattened into rows, and the MLflow runs behind them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churn import system

METRICS_FILE = "reports/metrics.json"
CV_FILE = "reports/cv_metrics.json"


def dvc(*args: str, cwd: Path | None = None) -> str:
    """DVC's stdout; a failure is a one-line ChurnError."""
    return system.dvc(*args, cwd=cwd).stdout


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


@dataclass
class ExpRow:
    """One row of `dvc exp show`: a baseline commit or an experiment on it."""

    name: str
    rev: str
    baseline: str
    is_baseline: bool
    params: dict[str, Any]
    metrics: dict[str, float]
    cv: dict[str, float]
    outs: dict[str, str]
    mlflow_run: str | None = None
    computed_by: str | None = None  # the parent run that computed this row's results, if another one
    notes: list[str] = field(default_factory=list)


def _row(entry: dict, baseline: str, is_baseline: bool) -> ExpRow | None:
    data = entry.get("data") or {}
    if entry.get("error") or not data:
        return None
    params = flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    metrics_all = data.get("metrics") or {}
    return ExpRow(
        name=entry.get("name") or entry["rev"][:7],
        rev=entry["rev"],
        baseline=baseline,
        is_baseline=is_baseline,
        params=params,
        metrics=(metrics_all.get(METRICS_FILE) or {}).get("data", {}),
        cv=(metrics_all.get(CV_FILE) or {}).get("data", {}),
        outs={path: info.get("hash") for path, info in (data.get("outs") or {}).items()},
    )


def experiment_rows(show: list[dict]) -> list[ExpRow]:
    """Baselines and their experiments from `dvc exp show --json` (the workspace row is left out)."""
    rows: list[ExpRow] = []
    for base in show:
        if base.get("rev") == "workspace":
            continue
        baseline = base["rev"]
        row = _row(base, baseline, True)
        if row:
            rows.append(row)
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                row = _row(rev, baseline, False)
                if row:
                    row.name = exp.get("name") or row.name
                    rows.append(row)
    return rows


def lock_outs(rev: str, cwd: Path | None = None) -> dict[str, str]:
    """md5 of every output, metrics and plots included, as dvc.lock records them at `rev`
    (`dvc exp show` leaves uncached metrics out of its `outs`)."""
    import yaml

    shown = system.git("show", f"{rev}:dvc.lock", cwd=cwd, check=False)
    if shown is None:
        return {}
    stages = (yaml.safe_load(shown) or {}).get("stages", {})
    return {out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs", [])}


def load_rows(all_commits: bool = False, cwd: Path | None = None) -> list[ExpRow]:
    args = ["exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    rows = experiment_rows(json.loads(dvc(*args, cwd=cwd)))
    for row in rows:
        row.outs.update({k: v for k, v in lock_outs(row.rev, cwd).items() if v})
    return rows
