"""The objective: a trial scored as the train stage scores (same inputs, folds, seed and threshold)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from churn.config import Params
from churn.errors import DataError
from churn.tools.settings import TuneSettings, param_key
from churn.tools.tune.mlflow_runs import TrialLogger
from churn.tools.tune.search import suggest, trial_model
from churn.tools.tune.storage import error_line
from churn.tools.tune.study import ORIGIN_ATTR, WORKER_ATTR

if TYPE_CHECKING:
    import optuna
    import pandas as pd


def load_inputs(params: Params) -> tuple[pd.DataFrame, Any, str]:
    """The prepared train split and the preprocessor, as the train stage reads them, and their joint md5."""
    from churn.storage.outputs import read_pickle
    from churn.storage.parquet import read_parquet
    from churn.storage.paths import PREPARED_TRAIN as TRAIN
    from churn.storage.paths import PREPROCESSOR
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


def make_objective(settings: TuneSettings, params: Params, frame: pd.DataFrame, preprocessor, tracker: TrialLogger):
    """Score a trial as the train stage would (same folds, seed and threshold); prune between folds."""
    import optuna

    from churn.core.models import build_model, calibrated, iter_cv_folds, summarise_folds

    folds = params.train.cv_folds
    space = settings.space_of(settings.family)

    def objective(trial: optuna.Trial) -> float:
        # A retried trial inherits the user attributes of the trial it replaces: the original's number.
        origin = trial.user_attrs.get(ORIGIN_ATTR)
        values = {name: suggest(trial, param_key(settings.family, name), dim) for name, dim in space.items()}
        model = trial_model(params.model, settings.family, values)
        run_id = tracker.start(trial.number, model, retry_of=origin)
        # Who runs the trial (its MLflow run exists from here on), for whoever finds it stale.
        trial.set_user_attr(WORKER_ATTR, tracker.worker)
        trial.set_user_attr(ORIGIN_ATTR, trial.number)
        fold_metrics: list[dict[str, float]] = []
        try:
            estimator = build_model(model, params.train.seed, params.train.n_jobs)
            estimator = calibrated(estimator, params.train.calibration, folds)
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
        except KeyboardInterrupt:
            tracker.end(run_id, "FAIL", error="interrupted (Ctrl-C or SIGTERM); queued again", interrupted=True)
            raise
        except BaseException as exc:
            tracker.end(run_id, "FAIL", error=error_line(exc))
            raise
        tracker.end(run_id, "COMPLETE", summary)
        return summary[settings.metric]

    return objective
