"""Helpers for integration tests: temporary git+DVC repositories of the project, commands, MLflow queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from churn.tools import sandbox
from tests.conftest import project_env

PYTHON = sys.executable
DVC = [PYTHON, "-m", "dvc"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: int = 900):
    result = subprocess.run(cmd, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
            f"stderr:\n{result.stderr[-4000:]}"
        )
    return result


def make_repo(root: Path, rows: int = 600, params: dict | None = None, raw: Path | None = None) -> Path:
    """churn.tools.sandbox's repository, with 3 cross-validation folds (faster) unless `params` says otherwise."""
    params = dict(params or {})
    params["train"] = {"cv_folds": 3, **params.get("train", {})}
    return sandbox.make_repo(root, rows, params, raw)


def reproduce(root: Path, env: dict[str, str] | None = None, commit: bool = True) -> None:
    """Create the store, run the pipeline and (by default) commit its results, as a user would."""
    run([PYTHON, "-m", "churn.tools.store", "init"], root, env)
    run([*DVC, "repro"], root, env)
    if commit:
        run(["git", "add", "-A"], root, env)
        run(["git", "commit", "-q", "-m", "pipeline results"], root, env)


def mlflow_runs(root: Path, experiment: str = "churn"):
    """All runs of the repository's local store, as a DataFrame (empty if none)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], max_results=5000)


def parents_and_children(runs) -> tuple[list, dict[str, list]]:
    parents = [r for r in runs if r.data.tags.get("churn.role") == "pipeline"]
    children: dict[str, list] = {p.info.run_id: [] for p in parents}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent:
            children.setdefault(parent, []).append(r)
    return parents, children


def exp_show(root: Path) -> list[dict]:
    return json.loads(run([*DVC, "exp", "show", "--json"], root).stdout)
