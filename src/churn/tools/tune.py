"""tune: an Optuna study over one model family's hyper-parameters, scored exactly as the train stage scores.

in: data/prepared/train.parquet, models/preprocessor.pkl (the featurize outputs; run `make run` first)
out: tune.best_params (default tune/best_params.json); with --apply, a DVC experiment | params: tune, model, train

The objective is the cross-validated `tune.metric` on the train split, through the train stage's own code
path (`churn.core.models.iter_cv_folds` with train.cv_folds, train.seed, evaluate.threshold), so applying the best
trial with `dvc exp run -S ...` reproduces its CV score. Each fold is reported to a median pruner.
The study lives in an Optuna storage (sqlite under the repository root by default, or PostgreSQL shared by
workers on several machines); re-running continues it. MLflow gets one parent run per study and one nested
run per trial. Usage: `python -m churn.tools.tune [--trials N] [--timeout S] [--storage URL] [--study NAME]
[--family F] [--apply]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.config import LOWER_IS_BETTER, MODEL_TYPES, Dimension, ModelParams, Params, TuneParams, param_key
from churn.errors import ChurnError, DataError
from churn.system import atomic_path, first_line

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from churn.tracking.store import Store

log = logging.getLogger(__name__)

STORE_FILE = "optuna.db"
STUDY_ROLE = "study"
TRIAL_ROLE = "trial"
# Metrics that depend on evaluate.threshold (the others are computed from probabilities alone).
THRESHOLD_METRICS = frozenset({"accuracy", "precision", "recall", "f1"})
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


# --- settings: the tune block (validated by churn.config) with its defaults resolved ----------------


def default_storage(root: Path | None = None) -> str:
    from churn.tracking.store import repo_root

    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def resolve_storage(url: str | None, root: Path | None = None) -> str:
    """The storage URL to use: the default sqlite file, or `url` with a relative sqlite path made absolute."""
    from churn.tracking.store import absolute_uri, repo_root

    if not url:
        return default_storage(root)
    return absolute_uri(url, root or repo_root())


def resolve(settings: TuneParams, model_type: str) -> TuneParams:
    """`settings` with no null left in family (model.type), study_name and storage (an absolute URL)."""
    family = settings.family or model_type
    settings.space_of(family)  # a family without a search space fails here, before the data is read
    study_name = settings.study_name or f"churn-{family}-{settings.metric}"
    return settings.model_copy(
        update={"family": family, "study_name": study_name, "storage": resolve_storage(settings.storage)}
    )


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def suggest(trial: optuna.Trial, key: str, dim: Dimension) -> Any:
    """A value of one searched hyper-parameter; the bounds have its type (int bounds: an integer search)."""
    if dim.choices is not None:
        return trial.suggest_categorical(key, list(dim.choices))
    if isinstance(dim.low, int) and isinstance(dim.high, int):
        return trial.suggest_int(key, dim.low, dim.high, log=dim.log)
    return trial.suggest_float(key, dim.low, dim.high, log=dim.log)


def trial_model(model: ModelParams, family: str, values: dict[str, Any]) -> ModelParams:
    """`model` with the family switched to `family` and the searched values (keyed by hyper-parameter) set."""
    if family == "logistic_regression":
        return model.model_copy(update={"type": family, **values})
    return model.model_copy(update={"type": family, family: getattr(model, family).model_copy(update=values)})


# --- sampling: TPE seeded per trial --------------------------------------------------------------


def seeded_tpe(seed: int):
    """A TPE sampler whose randomness for trial n is seeded with seed + n.

    A re-run proposes the same trials given the same history, a continued study does not repeat its
    first proposals, and concurrent workers on one study (different trial numbers) do not duplicate each
    other, which one shared seed would do for every random start-up trial.
    """
    from optuna.samplers import BaseSampler, TPESampler

    class TrialSeededTPE(BaseSampler):
        def __init__(self) -> None:
            self._tpe = TPESampler(seed=seed)

        def before_trial(self, study, trial) -> None:
            self._tpe = TPESampler(seed=(seed + trial.number) % 2**32)
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

    return TrialSeededTPE()


# --- storage -------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without SQLAlchemy's `(driver.ErrorClass) ` prefix."""
    return re.sub(r"^\([\w.]+\)\s*", "", first_line(exc))


def _connect_server(url: str):
    """(engine, connection) to a database server, or a one-line error within seconds when unreachable."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from churn.tracking.store import redact

    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        return engine, engine.connect()
    except Exception as exc:  # noqa: BLE001 - any driver or URL error means the storage is unusable
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({_first_line(exc)})") from None


def check_storage(url: str) -> None:
    """Fail fast, before anything slow, when a storage server cannot be reached."""
    if url.startswith("postgresql"):
        engine, connection = _connect_server(url)
        connection.close()
        engine.dispose()


@contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialise study (and MLflow parent) creation across workers: a PostgreSQL advisory lock, which holds
    across machines, or a file lock next to a sqlite file."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        from filelock import FileLock

        with FileLock(url.removeprefix("sqlite:///") + ".lock", timeout=600):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = zlib.crc32(b"churn.tools.tune") & 0x7FFFFFFF
    engine, connection = _connect_server(url)
    try:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        yield
    finally:
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            connection.close()
            engine.dispose()


def open_storage(url: str):
    """The Optuna RDB storage at `url` (tables created on first use). Heartbeats let a worker that dies
    mid-trial be noticed by the others: its trial is marked failed instead of running forever."""
    import optuna

    from churn.tracking.store import redact

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
    except Exception as exc:  # noqa: BLE001
        raise ChurnError(f"cannot open the Optuna storage {redact(url)} ({_first_line(exc)})") from None


def study_fingerprint(settings: TuneParams, params: Params, data_md5: str) -> dict[str, Any]:
    """What a study's scores depend on; continuing a study under different values would mix incomparable
    trials, so a mismatch is an error."""
    found = {
        "family": settings.family,
        "metric": settings.metric,
        "data_md5": data_md5,
        "train.cv_folds": params.train.cv_folds,
        "train.seed": params.train.seed,
    }
    if settings.metric in THRESHOLD_METRICS:
        found["evaluate.threshold"] = params.evaluate.threshold
    return found


def load_or_create_study(storage, settings: TuneParams, fingerprint: dict[str, Any]):
    import optuna

    from churn.tracking.store import redact

    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        direction=direction(settings.metric),
        sampler=seeded_tpe(settings.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner.n_startup_trials, n_warmup_steps=settings.pruner.n_warmup_steps
        ),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("churn")
    if recorded is None:
        study.set_user_attr("churn", fingerprint)
        return study
    for key, value in fingerprint.items():
        if recorded.get(key) != value:
            raise ChurnError(
                f"study {settings.study_name!r} in {redact(settings.storage)} was run with "
                f"{key}={recorded.get(key)!r}, now {value!r}; set tune.study_name (or --study) to start a new study"
            )
    return study


# --- MLflow: one parent per study, one nested run per trial --------------------------------------


def _parent_attr(store: Store) -> str:
    digest = hashlib.md5(store.uri.encode()).hexdigest()[:12]  # noqa: S324 - a key, not security
    return f"mlflow_parent_run:{digest}"


def study_parent(store: Store, study, settings: TuneParams, params: Params, data_md5: str) -> str:
    """The study's MLflow parent run in this store: recorded in the study itself (so workers on several
    machines find the same one); created, with the study's settings as params, the first time."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.context import registry as context_registry

    from churn.tracking.runs import PARENT_TAG, flatten, git_tags
    from churn.tracking.store import redact

    attr = _parent_attr(store)
    run_id = study.user_attrs.get(attr)
    if run_id:
        try:
            run = store.client.get_run(run_id)
            if run.info.lifecycle_stage == "active" and run.info.experiment_id == store.experiment_id:
                store.client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            pass
    tags = {
        **git_tags(),
        PARENT_TAG: STUDY_ROLE,
        "optuna.study": settings.study_name,
        "optuna.storage": redact(settings.storage),
        "optuna.family": settings.family,
        "optuna.metric": settings.metric,
        "optuna.direction": direction(settings.metric),
        "data.md5": data_md5,
    }
    run = store.client.create_run(
        store.experiment_id, run_name=f"tune:{settings.study_name}", tags=context_registry.resolve_tags(tags)
    )
    space = {
        param_key(settings.family, name): (
            list(d.choices) if d.choices is not None else f"{d.low}..{d.high}{' log' if d.log else ''}"
        )
        for name, d in settings.space_of(settings.family).items()
    }
    logged = {
        "tune": settings.model_dump(include={"family", "metric", "seed", "pruner"}),
        "space": space,
        "train": {"cv_folds": params.train.cv_folds, "seed": params.train.seed},
        "evaluate": {"threshold": params.evaluate.threshold},
    }
    store.client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in flatten(logged).items()])
    study.set_user_attr(attr, run.info.run_id)
    log.info("MLflow parent run %s for study %r", run.info.run_id, settings.study_name)
    return run.info.run_id


@dataclass
class TrialLogger:
    """Writes one nested MLflow run per trial, as the trial happens."""

    store: Store
    parent_id: str
    settings: TuneParams
    context: dict[str, str]
    numbers: list[int] = field(default_factory=list)  # the trials this process ran

    def start(self, number: int, model: ModelParams) -> str:
        from mlflow.entities import Param
        from mlflow.tracking.context import registry as context_registry

        from churn.tracking.runs import PARENT_TAG

        tags = {
            **self.context,
            "mlflow.parentRunId": self.parent_id,
            PARENT_TAG: TRIAL_ROLE,
            "optuna.study": self.settings.study_name,
            "optuna.trial": str(number),
            "optuna.state": "RUNNING",
        }
        self.numbers.append(number)
        run = self.store.client.create_run(
            self.store.experiment_id, run_name=f"trial-{number}", tags=context_registry.resolve_tags(tags)
        )
        hyper = {"model.type": model.type, **{param_key(model.type, k): v for k, v in model.hyperparameters().items()}}
        self.store.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in hyper.items()])
        return run.info.run_id

    def fold(self, run_id: str, index: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(f"fold_{name}", value, now, index) for name, value in metrics.items()]
        self.store.client.log_batch(run_id, metrics=items)

    def end(self, run_id: str, state: str, summary: dict[str, float] | None = None, error: str = "") -> None:
        import time

        from mlflow.entities import Metric

        if summary:
            now = int(time.time() * 1000)
            self.store.client.log_batch(run_id, metrics=[Metric(f"cv_{k}", v, now, 0) for k, v in summary.items()])
        self.store.client.set_tag(run_id, "optuna.state", state)
        if error:
            self.store.client.set_tag(run_id, "error", error[:4000])
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.store.client.set_terminated(run_id, status)


# --- the objective ---------------------------------------------------------------------------------


def make_objective(settings: TuneParams, params: Params, frame: pd.DataFrame, preprocessor, tracker: TrialLogger):
    """Score a trial as the train stage would (same folds, seed and threshold); prune between folds."""
    import optuna

    from churn.core.models import build_model, iter_cv_folds, summarise_folds

    folds = params.train.cv_folds
    space = settings.space_of(settings.family)

    def objective(trial: optuna.Trial) -> float:
        values = {name: suggest(trial, param_key(settings.family, name), dim) for name, dim in space.items()}
        model = trial_model(params.model, settings.family, values)
        run_id = tracker.start(trial.number, model)
        fold_metrics: list[dict[str, float]] = []
        try:
            estimator = build_model(model, params.train.seed, params.train.n_jobs)
            cv = iter_cv_folds(
                preprocessor,
                estimator,
                frame,
                params.data.target,
                folds,
                params.train.seed,
                params.evaluate.threshold,
            )
            for index, metrics in enumerate(cv):
                fold_metrics.append(metrics)
                tracker.fold(run_id, index, metrics)
                trial.report(metrics[settings.metric], index)
                # The last fold is never pruned: its work is done, and its score is the trial's result.
                if index < folds - 1 and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {index + 1} of {folds}")
            summary = summarise_folds(fold_metrics)
        except optuna.TrialPruned:
            tracker.end(run_id, "PRUNED")
            raise
        except BaseException as exc:
            tracker.end(run_id, "FAIL", error=_first_line(exc))
            raise
        tracker.end(run_id, "COMPLETE", summary)
        return summary[settings.metric]

    return objective


# --- after the trials: best parameters, parent summary, plots ------------------------------------


def best_record(study, settings: TuneParams) -> dict[str, Any] | None:
    """The study's best trial as the parameters to set (`model.type` first), or None before any completes."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    from churn.tracking.store import redact

    return {
        "study": settings.study_name,
        "storage": redact(settings.storage),
        "metric": settings.metric,
        "direction": direction(settings.metric),
        "trial": best.number,
        "value": best.value,
        "params": {"model.type": settings.family, **best.params},
    }


def write_best(record: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as staged:
        staged.write_text(json.dumps(record, indent=2) + "\n")  # json writes floats with repr: exact round trip
    log.info("wrote %s (trial %d, %s %s)", path, record["trial"], record["metric"], record["value"])


def save_plots(study, folder: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and parallel coordinates, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    written = []
    for name in PLOTS:
        if not complete or (name == "param_importances" and len(complete) < 2):
            log.info("skipped the %s plot: it needs more completed trials", name)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(plots, f"plot_{name}")(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a parameter that never varied
            log.warning("could not draw the %s plot (%s)", name, _first_line(exc))
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def summarise_study(store: Store, parent_id: str, study, settings: TuneParams, record: dict | None) -> None:
    """Counts, the best trial and the plots on the study's parent run."""
    import tempfile
    import time

    import optuna
    from mlflow.entities import Metric

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    now, step = int(time.time() * 1000), len(trials)
    metrics = [Metric(f"trials_{state}", float(n), now, step) for state, n in counts.items() if n]
    if record:
        metrics.append(Metric(f"best_cv_{settings.metric}", float(record["value"]), now, step))
        store.client.set_tag(parent_id, "best.trial", str(record["trial"]))
        for key, value in record["params"].items():
            store.client.set_tag(parent_id, f"best.{key}", repr(value) if isinstance(value, float) else str(value))
    store.client.log_batch(parent_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(study, Path(tmp)):
            store.client.log_artifact(parent_id, str(path), "plots")
        if record:
            best = Path(tmp) / "best_params.json"
            best.write_text(json.dumps(record, indent=2) + "\n")
            store.client.log_artifact(parent_id, str(best))
    store.client.set_terminated(parent_id, "FINISHED")


# --- apply: the best parameters as a DVC experiment -----------------------------------------------


def _override(value: Any) -> str:
    """A value as `dvc exp run -S key=value` parses it back exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def apply_command(record: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "dvc", "exp", "run"]
    for key, value in record["params"].items():
        command += ["-S", f"{key}={_override(value)}"]
    return command


def apply_best(path: Path) -> str:
    """Run the best parameters in `path` as a DVC experiment (train, evaluate, register as for any run);
    returns the experiment's name."""
    if not path.exists():
        raise ChurnError(f"{path}: not found; run `make tune` until a trial completes, then apply")
    record = json.loads(path.read_text())
    command = apply_command(record)
    log.info("applying trial %s of study %r: %s", record["trial"], record["study"], " ".join(command[2:]))
    name = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            found = re.search(r"Ran experiment\(s\):\s*(\S+)", line)
            name = found.group(1) if found else name
    if proc.returncode != 0:
        raise ChurnError(f"dvc exp run exited {proc.returncode} applying {path}; see its output above")
    log.info(
        "experiment %s: compare with `dvc exp show`; its CV %s should be %s", name, record["metric"], record["value"]
    )
    return name or ""


# --- the command ---------------------------------------------------------------------------------


def load_inputs(params: Params) -> tuple[pd.DataFrame, Any, str]:
    """The prepared train split and the preprocessor, as the train stage reads them, and their joint md5."""
    from churn.pipeline.files import read_parquet, read_pickle
    from churn.pipeline.paths import PREPARED_TRAIN as TRAIN
    from churn.pipeline.paths import PREPROCESSOR
    from churn.system import combined_md5

    for path in (TRAIN, PREPROCESSOR):
        if not path.exists():
            raise DataError(str(path), "not found; tuning scores the pipeline's train split: run `make run` first")
    frame = read_parquet(TRAIN)
    preprocessor = read_pickle(PREPROCESSOR)
    smallest = int(frame[params.data.target].value_counts().min())
    if smallest < params.train.cv_folds:
        raise DataError(
            str(TRAIN), f"smallest class has {smallest} rows; train.cv_folds={params.train.cv_folds} needs more"
        )
    return frame, preprocessor, combined_md5([TRAIN, PREPROCESSOR])


def tune(settings: TuneParams, params: Params, n_trials: int, progress: bool = True) -> dict[str, Any] | None:
    """Run `n_trials` more trials (0: none) of the study of `settings` (resolved); returns the best record (also
    written to tune.best_params)."""
    from churn.tracking.runs import git_tags
    from churn.tracking.store import connect, redact

    check_storage(settings.storage)
    frame, preprocessor, data_md5 = load_inputs(params)
    store = connect(params.mlflow.experiment, params.mlflow.tracking_uri)
    with storage_lock(settings.storage):  # workers starting together create the study and its parent once
        storage = open_storage(settings.storage)
        study = load_or_create_study(storage, settings, study_fingerprint(settings, params, data_md5))
        parent_id = study_parent(store, study, settings, params, data_md5)
    before = len(study.trials)
    log.info(
        "study %r in %s: %d trials so far; running %d more (%s, %s %s)",
        settings.study_name,
        redact(settings.storage),
        before,
        n_trials,
        settings.family,
        direction(settings.metric),
        settings.metric,
    )
    worker = f"{socket.gethostname()}:{os.getpid()}"
    tracker = TrialLogger(store, parent_id, settings, {**git_tags(), "data.md5": data_md5, "optuna.worker": worker})
    if n_trials:
        study.optimize(
            make_objective(settings, params, frame, preprocessor, tracker),
            n_trials=n_trials,
            timeout=settings.timeout_s,
            catch=(Exception,),
            show_progress_bar=progress,
            gc_after_trial=False,
        )
    numbers = set(tracker.numbers)
    mine = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    record = best_record(study, settings)
    summarise_study(store, parent_id, study, settings, record)
    states = {s: sum(t.state.name == s for t in mine) for s in ("COMPLETE", "PRUNED", "FAIL")}
    log.info(
        "study %r now has %d trials (%d complete, %d pruned, %d failed in total); MLflow parent run %s",
        settings.study_name,
        len(study.trials),
        sum(t.state.name == "COMPLETE" for t in study.trials),
        sum(t.state.name == "PRUNED" for t in study.trials),
        sum(t.state.name == "FAIL" for t in study.trials),
        parent_id,
    )
    if n_trials and states["FAIL"] and not (states["COMPLETE"] or states["PRUNED"]):
        error = next((t.system_attrs.get("fail_reason") for t in mine if t.state.name == "FAIL"), None)
        raise ChurnError(f"every trial failed ({error or 'see the MLflow trial runs for the error'})")
    if record is None:
        log.warning("no trial has completed yet: no best parameters")
        return None
    write_best(record, Path(settings.best_params))
    shown = ", ".join(f"{k}={_override(v)}" for k, v in record["params"].items())
    log.info("best: trial %d, cv %s %.6f with %s", record["trial"], settings.metric, record["value"], shown)
    return record


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.config import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tools.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=_count, help="trials to run now (default tune.n_trials; 0 with --apply)")
    parser.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    parser.add_argument("--storage", help="Optuna storage URL, e.g. postgresql+psycopg2://user:pw@host/db")
    parser.add_argument("--study", help="study name (default tune.study_name, else churn-<family>-<metric>)")
    parser.add_argument("--family", choices=MODEL_TYPES, help="model family to tune (default tune.family)")
    parser.add_argument("--apply", action="store_true", help="run the best parameters as a DVC experiment")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def _main() -> None:
        import optuna

        # With a progress bar, the bar shows the best trial so far; without, Optuna logs one line per trial.
        optuna.logging.set_verbosity(logging.WARNING if not args.no_progress else logging.INFO)
        params = load_params()
        cli = {"timeout_s": args.timeout, "storage": args.storage, "study_name": args.study, "family": args.family}
        settings = resolve(params.tune.override(**cli), params.model.type)
        # Not through override, which (as params.yaml) wants n_trials >= 1: --trials 0 --apply applies the best
        # of an existing study without running more trials.
        n_trials = settings.n_trials if args.trials is None else args.trials
        tune(settings, params, n_trials, progress=not args.no_progress)
        if args.apply:
            name = apply_best(Path(settings.best_params))
            print(name)  # noqa: T201 - machine-readable: the experiment's name

    run_cli(_main)


if __name__ == "__main__":
    main()
