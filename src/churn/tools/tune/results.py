"""After the trials: the best parameters, the parent run's summary and the study's plots."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn.system import atomic_path
from churn.tools.settings import TuneSettings
from churn.tools.tune.search import direction
from churn.tools.tune.storage import error_line, open_storage, storage_lock
from churn.tools.tune.study import SUMMARY_ATTR

if TYPE_CHECKING:
    from churn.tracking.store import Store

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def best_record(study, settings: TuneSettings) -> dict[str, Any] | None:
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


def keep_best(record: dict[str, Any] | None, settings: TuneSettings) -> dict[str, Any] | None:
    """`record` written to tune.best_params, or a warning that no trial has completed yet."""
    if record is None:
        log.warning("no trial has completed yet: no best parameters")
        return None
    write_best(record, Path(settings.best_params))
    return record


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
            log.warning("could not draw the %s plot (%s)", name, error_line(exc))
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def summarise_study(store: Store, parent_id: str, study, settings: TuneSettings, record: dict | None) -> None:
    """Counts, the best trial and the plots on the study's parent run."""
    import tempfile

    import optuna
    from mlflow.entities import Metric, RunTag

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    now, step = int(time.time() * 1000), len(trials)
    metrics = [Metric(f"trials_{state}", float(n), now, step) for state, n in counts.items() if n]
    tags = []
    if record:
        metrics.append(Metric(f"best_cv_{settings.metric}", float(record["value"]), now, step))
        tags.append(RunTag("best.trial", str(record["trial"])))
        for key, value in record["params"].items():
            tags.append(RunTag(f"best.{key}", repr(value) if isinstance(value, float) else str(value)))
    store.client.log_batch(parent_id, metrics=metrics, tags=tags)  # the best trial's tags too: one request
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(study, Path(tmp)):
            store.client.log_artifact(parent_id, str(path), "plots")
        if record:
            best = Path(tmp) / "best_params.json"
            best.write_text(json.dumps(record, indent=2) + "\n")
            store.client.log_artifact(parent_id, str(best))
    store.client.set_terminated(parent_id, "FINISHED")


def finish_study(store: Store, parent_id: str, study, settings: TuneSettings) -> dict[str, Any] | None:
    """The best record; the parent run summarised and ended by the last worker out (none of the study's
    trials running), once per state of the study (workers that end together do not redo the plots)."""
    with storage_lock(settings.storage):
        record = best_record(study, settings)
        trials = study.get_trials(deepcopy=False)
        if any(t.state.name == "RUNNING" for t in trials):
            return record  # another worker is still at work; the last one summarises
        if study.user_attrs.get(SUMMARY_ATTR) == len(trials):
            store.client.set_terminated(parent_id, "FINISHED")
        else:
            summarise_study(store, parent_id, study, settings, record)
            study.set_user_attr(SUMMARY_ATTR, len(trials))
    return record


def best_of(settings: TuneSettings) -> dict[str, Any] | None:
    """The study's best record, written to tune.best_params (after local workers have finished)."""
    import optuna

    study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage))
    return keep_best(best_record(study, settings), settings)
