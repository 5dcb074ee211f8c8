"""Rebuild a registered version from its lineage and check that it predicts exactly what the registry holds.

    python -m churn.tools.reproduce VERSION [--name NAME] [--keep]

1. The version's lineage tags name the code (git.commit; under `dvc exp run` the baseline, with
   dvc.exp_name), the data (data.path, data.md5) and the run whose params.yaml was logged (run_id).
2. The code is checked out in a temporary `git worktree`: the experiment's own commit when its ref
   (refs/exps/...) is in this repository, else git.commit; then the params.yaml the run logged is written
   over it, so an experiment's `-S` values apply either way.
3. The raw data with md5 data.md5 is copied from this checkout or its DVC cache, else obtained as
   `make data` does (dvc pull from the remote, else regenerate the bundled sample and verify it).
4. `dvc repro --force` runs there, logging to a throwaway MLflow store inside the temporary directory, so
   the real registry gains nothing.
5. The rebuilt pipeline (models/*.pkl) and the registered model score the rebuilt held-out split
   (data/prepared/test.parquet): prints "identical", or the largest difference and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from churn.errors import ChurnError
from churn.system import dvc, git

log = logging.getLogger(__name__)

PARAMS_ARTIFACT = "lineage/params.yaml"


@dataclass(frozen=True)
class Source:
    """What to check out for a version: a commit, the params to apply, the data to put in place."""

    commit: str
    how: str
    data_path: str
    data_md5: str


def _git(repo: Path, *args: str, check: bool = True) -> str | None:
    return git(*args, cwd=repo, check=check)


def _dvc(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return dvc(*args, cwd=cwd, env=env, check=False)


def experiment_commit(repo: Path, baseline: str, name: str) -> str | None:
    """The commit DVC saved for experiment `name` of `baseline` (refs/exps/ab/cdef.../name), if present."""
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)


def source_of(repo: Path, version) -> Source:
    """The commit (and how it was found) and the data of a registered version, from its lineage tags."""
    tags = version.tags
    commit = tags.get("git.commit", "")
    if not commit:
        raise ChurnError(f"version {version.version} has no git.commit tag; it cannot be reproduced")
    how = f"commit {commit[:8]}"
    name, baseline = tags.get("dvc.exp_name", ""), tags.get("dvc.baseline_rev", "")
    if name and baseline:
        found = experiment_commit(repo, baseline, name)
        if found:
            commit, how = found, f"experiment {name} (commit {found[:8]})"
        else:
            how = f"baseline {commit[:8]} of experiment {name} (its ref is not in this repository)"
    elif tags.get("git.dirty") == "true":
        log.warning(
            "version %s was built from a workspace with uncommitted changes to %s; only its params are restored",
            version.version,
            commit[:8],
        )
    if _git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False) is None:
        raise ChurnError(f"commit {commit} of version {version.version} is not in {repo}; fetch it first")
    return Source(commit, how, tags.get("data.path", ""), tags.get("data.md5", ""))


def largest_difference(rebuilt: np.ndarray, registered: np.ndarray) -> tuple[float, int]:
    """(largest absolute difference, its row); (0.0, -1) when the two are bit for bit equal."""
    if rebuilt.shape != registered.shape:
        raise ChurnError(f"the rebuilt model scored {rebuilt.shape} values but the registered one {registered.shape}")
    if np.array_equal(rebuilt, registered, equal_nan=True):
        return 0.0, -1
    diff = np.abs(rebuilt - registered)
    diff = np.where(np.isnan(rebuilt) != np.isnan(registered), np.inf, np.nan_to_num(diff, nan=0.0))
    row = int(np.argmax(diff))
    return float(diff[row]), row


# --- the temporary checkout ------------------------------------------------------------------------


def subprocess_env(store_uri: str) -> dict[str, str]:
    """This interpreter's environment for the rebuild: its venv first, a throwaway MLflow store, no DVC or
    MLflow or project variables inherited (DVC sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "CHURN_"))}
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    env["MLFLOW_TRACKING_URI"] = store_uri
    return env


def write_params(tree: Path, logged: Path | None) -> None:
    """Apply the params.yaml the version's run logged; never let it name the real tracking store."""
    import yaml

    target = tree / "params.yaml"
    if logged is not None:
        shutil.copyfile(logged, target)
    raw = yaml.safe_load(target.read_text())
    block = raw.get("mlflow") if isinstance(raw, dict) else None
    if isinstance(block, dict) and block.get("tracking_uri"):
        block["tracking_uri"] = ""  # the environment's throwaway store applies
        target.write_text(yaml.safe_dump(raw, sort_keys=False))


def _cache_dir(repo: Path) -> Path | None:
    result = _dvc(repo, "cache", "dir")
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def _absolute_remotes(repo: Path, tree: Path, env: dict[str, str]) -> None:
    """Point the worktree's DVC remotes where this checkout's point (a relative local remote would not)."""
    listed = _dvc(repo, "remote", "list")
    for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
        parts = line.split()
        if len(parts) < 2:
            continue
        name, url = parts[0], parts[1]
        if "://" in url or Path(url).isabsolute_uri():
            continue
        absolute = (repo / ".dvc" / url).resolve()
        _dvc(tree, "remote", "modify", "--local", name, "url", str(absolute), env=env)


def place_raw_data(repo: Path, tree: Path, source: Source, env: dict[str, str]) -> str:
    """Put the version's raw data into the worktree; returns where it came from."""
    from churn.system import file_md5

    if not source.data_path:
        raise ChurnError("the version has no data.path tag; it cannot be reproduced")
    target = tree / source.data_path
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.data_md5:
        md5 = source.data_md5
        cache = _cache_dir(repo)
        candidates = [repo / source.data_path]
        if cache is not None:
            candidates.append(cache / "files" / "md5" / md5[:2] / md5[2:])
        for candidate in candidates:
            if candidate.is_file() and file_md5(candidate) == md5:
                shutil.copyfile(candidate, target)
                return f"copied from {candidate}"
    _absolute_remotes(repo, tree, env)
    fetched = subprocess.run(
        [sys.executable, "-m", "churn.tools.rawdata"], cwd=tree, env=env, capture_output=True, text=True
    )
    if fetched.returncode != 0:
        reason = (fetched.stderr.strip().splitlines() or ["no output"])[-1]
        raise ChurnError(f"{source.data_path}: cannot obtain the version's data (md5 {source.data_md5}): {reason}")
    if source.data_md5 and file_md5(target) != source.data_md5:
        raise ChurnError(
            f"{source.data_path}: the version was built from data with md5 {source.data_md5}, which is neither "
            "in this checkout, its DVC cache nor its remote"
        )
    return "obtained as `make data` does (DVC remote or regenerated sample)"


def rebuilt_predictions(tree: Path, columns: list[str]):
    """The rebuilt held-out split's feature columns and the rebuilt pipeline's probabilities on them."""
    from churn.core.models import inference_pipeline
    from churn.storage.outputs import read_pickle
    from churn.storage.parquet import read_parquet
    from churn.storage.paths import MODEL, PREPARED_TEST, PREPROCESSOR

    features = read_parquet(tree / PREPARED_TEST)[columns]
    pipeline = inference_pipeline(read_pickle(tree / PREPROCESSOR), read_pickle(tree / MODEL))
    return features, pipeline.predict_proba(features)[:, 1]


def reproduce(repo: Path, name: str, ref: str, configured_uri: str = "", keep: bool = False) -> tuple[float, int]:
    """Rebuild version `ref` of `name` in a temporary worktree; returns largest_difference()."""
    import mlflow

    from churn.tools.versions import get_version, open_registry
    from churn.tracking.store import redact

    client, uri = open_registry(configured_uri)
    version = get_version(client, name, ref, redact(uri))
    source = source_of(repo, version)
    log.info("reproducing %s version %s from %s", name, version.version, source.how)

    temp = Path(tempfile.mkdtemp(prefix="churn-reproduce-"))
    tree = temp / "tree"
    env = subprocess_env(f"sqlite:///{temp / 'mlflow.db'}")
    added = False
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), source.commit)
        added = True
        logged = None
        if version.run_id:
            try:
                logged = Path(client.download_artifacts(version.run_id, PARAMS_ARTIFACT, str(temp)))
            except Exception:  # noqa: BLE001 - an older run without the artifact: the commit's params apply
                log.warning("run %s logged no %s; using the params of the commit", version.run_id, PARAMS_ARTIFACT)
        write_params(tree, logged)
        log.info("raw data %s: %s", source.data_path, place_raw_data(repo, tree, source, env))

        log.info("running `dvc repro --force` in %s (the whole pipeline; a minute or so)", tree)
        built = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force"], cwd=tree, env=env, stdout=sys.stderr)
        if built.returncode != 0:
            raise ChurnError(f"dvc repro failed in the worktree of {source.how} (its output is above)")
        _compare_hash(tree, version)

        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        columns = list(model.metadata.get_input_schema().input_names())
        features, rebuilt = rebuilt_predictions(tree, columns)
        registered = np.asarray(model.predict(features), dtype="float64")
        registered = registered[:, 1] if registered.ndim == 2 else registered
        difference = largest_difference(np.asarray(rebuilt, dtype="float64"), registered)
        if difference[1] >= 0:
            row = difference[1]
            log.info("row %d: rebuilt %r, registered %r", row, float(rebuilt[row]), float(registered[row]))
        return difference
    finally:
        if keep:
            log.info("kept the worktree %s (remove it with `git worktree remove --force %s`)", tree, tree)
        else:
            if added:
                _git(repo, "worktree", "remove", "--force", str(tree), check=False)
            shutil.rmtree(temp, ignore_errors=True)


def _compare_hash(tree: Path, version) -> None:
    from churn.storage.outputs import read_json
    from churn.storage.paths import DECISION
    from churn.tracking.registry import HASH_TAG

    decision = tree / DECISION
    rebuilt = read_json(decision).get("model_md5") if decision.exists() else None
    if rebuilt and rebuilt == version.tags.get(HASH_TAG):
        log.info("rebuilt model files are byte-identical to version %s (model.md5 %s)", version.version, rebuilt)
    else:
        log.info(
            "rebuilt model.md5 %s differs from version %s's %s", rebuilt, version.version, version.tags.get(HASH_TAG)
        )


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.tracking.store import repo_root

    parser = argparse.ArgumentParser(prog="python -m churn.tools.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("version", help="version number or alias (champion, challenger)")
    parser.add_argument("--name", help="registered model name (default: register.model_name in params.yaml)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary worktree for inspection")
    args = parser.parse_args(argv)

    def _main() -> None:
        from churn.tools.registry import cli_settings

        name, _, configured_uri = cli_settings(args.name)
        difference, row = reproduce(repo_root(), name, args.version, configured_uri, args.keep)
        if row < 0:
            print("identical")  # noqa: T201 - the verdict
            return
        print(f"differs: largest absolute difference {difference:.6g} (held-out row {row})")  # noqa: T201
        sys.exit(1)

    run_cli(_main)


if __name__ == "__main__":
    main()
