"""The search: the tune block with its defaults resolved, a trial's values as model params, the seeded sampler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from churn.config import LOWER_IS_BETTER, ModelParams
from churn.tools.settings import Dimension, TuneSettings
from churn.tools.tune.storage import resolve_storage

if TYPE_CHECKING:
    import optuna


def resolve(settings: TuneSettings, model_type: str) -> TuneSettings:
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
