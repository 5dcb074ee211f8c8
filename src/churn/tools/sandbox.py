"""A throwaway copy of this project as a git + DVC repository of its own, for benchmarks, tests and trying an
idea without touching the workspace: `python -m churn.tools.sandbox DIR [--rows N]`.

The copy holds the code, pipeline, params and DVC config (no outputs), a generated raw table tracked by DVC
with a local remote beside it (`../dvc-storage`), and one commit. Commands run in it with `project_env()`:
this interpreter's virtualenv first on PATH, no DVC, MLflow or project variables inherited.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml

from churn.system import run

PROJECT = Path(__file__).resolve().parents[3]  # src/churn/tools/sandbox.py -> the repository
COPIED = ("src", "bin", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml")


def project_env(**extra: str) -> dict[str, str]:
    """Environment for the project's commands and DVC: this interpreter's venv first, nothing inherited that
    would redirect a run (DVC_*, MLFLOW_*, CHURN_*) or make a `make` behave as a sub-make (MAKEFLAGS...), a git
    identity if none is set."""
    inherited = ("DVC_", "MLFLOW_", "CHURN_", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    for name, value in (("NAME", "sandbox"), ("EMAIL", "sandbox@localhost")):
        env.setdefault(f"GIT_AUTHOR_{name}", value)
        env.setdefault(f"GIT_COMMITTER_{name}", value)
    env.update(extra)
    return env


def copy_project(dest: Path) -> Path:
    """Copy the project's tracked layout (code, pipeline, params, DVC config) into `dest`, without outputs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def make_repo(root: Path, rows: int = 600, params: dict | None = None, raw: Path | None = None) -> Path:
    """A git repository holding the project, with DVC initialised and a raw CSV tracked by DVC.

    `params` entries are merged into params.yaml block by block; `raw` replaces the generated sample."""
    from churn.tools.generate import write_csv

    copy_project(root)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    for block, values in (params or {}).items():
        settings[block].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    raw_path = root / settings["data"]["raw_path"]
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    if raw is None:
        write_csv(rows, settings["generate"]["seed"], raw_path, progress=False)
    else:
        raw_path.write_bytes(raw.read_bytes())
    env = project_env()
    dvc = [sys.executable, "-m", "dvc"]
    for command in (
        ["git", "init", "-q", "-b", "main"],
        [*dvc, "init", "-q"],
        [*dvc, "config", "core.analytics", "false"],  # as the project's .dvc/config
        [*dvc, "remote", "add", "-d", "local", "../dvc-storage"],
        [*dvc, "add", "-q", settings["data"]["raw_path"]],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "project"],
    ):
        run(command, cwd=root, env=env)
    return root


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    parser = argparse.ArgumentParser(prog="python -m churn.tools.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where to create the repository (must not exist)")
    parser.add_argument("--rows", type=int, default=600, help="rows of the generated raw table (default 600)")
    args = parser.parse_args(argv)

    def _main() -> None:
        from churn.errors import ChurnError

        if args.directory.exists():
            raise ChurnError(f"{args.directory}: already exists; choose a new directory")
        make_repo(args.directory, rows=args.rows)
        print(f"sandbox ready: cd {args.directory}")  # noqa: T201 - the command's output

    run_cli(_main)


if __name__ == "__main__":
    main()
