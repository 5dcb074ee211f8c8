"""The blocks of params.yaml that only tools read (churn.config.TOOL_BLOCKS): `generate`, `sweep`, `compare`,
`tune` and `drift`, each validated by the tool that reads it, with the same value types and one-line errors as the
stages' blocks (churn.config).

No DVC stage imports this module: editing it re-runs nothing, and a mistake in one of these blocks (a search
range with low > high) fails the tool that reads it, in one line naming the key, never a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from churn.config import (
    MODEL_TYPES,
    Block,
    Count,
    Flag,
    Float,
    Int,
    LogisticRegressionParams,
    Metric,
    ModelParams,
    Params,
    RandomForestParams,
    Scalar,
    Seed,
    Str,
    Text,
    XGBoostParams,
    at_least,
    expect,
    invalid,
    only_keys,
    parse_params,
    read_yaml,
    validate,
)
from churn.errors import ChurnError

HYPERPARAMETERS: dict[str, type[Block]] = {
    "logistic_regression": LogisticRegressionParams,
    "random_forest": RandomForestParams,
    "xgboost": XGBoostParams,
}

OptionalText = expect(Str | None, "null or a non-empty string")
OptionalPositive = expect(Annotated[Float, Field(gt=0)] | None, "null or a number > 0")
Values = expect(Annotated[tuple[Scalar, ...], Field(strict=False, min_length=1)], "a non-empty list of values")


def param_key(family: str, name: str) -> str:
    """The params.yaml key of a family's hyper-parameter (what `dvc exp run -S` sets), e.g. model.C."""
    return f"model.{name}" if family == "logistic_regression" else f"model.{family}.{name}"


# --- generate, compare ----------------------------------------------------------------------------------------


class GenerateSettings(Block):
    """The bundled sample (churn.tools.generate, churn.tools.rawdata)."""

    rows: at_least(10)
    seed: Seed


class DriftSettings(Block):
    """When churn.tools.predict warns about (and with --fail-on-drift fails on) a column's PSI."""

    warn_psi: expect(Annotated[Float, Field(gt=0)], "a number > 0")
    fail_psi: expect(Annotated[Float, Field(gt=0)], "a number > 0")

    @model_validator(mode="after")
    def _warn_first(self) -> DriftSettings:
        if self.fail_psi < self.warn_psi:
            raise invalid(f"a number >= warn_psi ({self.warn_psi})", "fail_psi", got=self.fail_psi)
        return self


class CompareSettings(Block):
    """How `make compare` ranks experiments."""

    sort_by: Metric
    curves: Count


# --- sweep and tune: per model family ---------------------------------------------------------------------------

T = TypeVar("T")


class _PerFamily(Block, Generic[T]):
    """Any subset of the model families, each mapping some of that family's hyper-parameters to a T."""

    logistic_regression: dict[str, T] | None = None
    random_forest: dict[str, T] | None = None
    xgboost: dict[str, T] | None = None

    @field_validator(*MODEL_TYPES, mode="before")
    @classmethod
    def _hyperparameter_names(cls, raw: Any, info: ValidationInfo) -> Any:
        if raw is None:
            return None  # the family is not swept or searched
        if not isinstance(raw, dict) or not raw:
            raise invalid(f"a non-empty mapping of {info.field_name} hyper-parameters")
        only_keys(raw, HYPERPARAMETERS[info.field_name].model_fields)
        return raw


class SweepSettings(_PerFamily[Values]):
    """Grids queued by `make sweep`: the cross product of one family's value lists."""

    def grids(self) -> dict[str, dict[str, list]]:
        """The families that have a grid, each hyper-parameter -> its values."""
        return {f: {k: list(v) for k, v in grid.items()} for f in MODEL_TYPES if (grid := getattr(self, f))}


class Dimension(Block):
    """One searched hyper-parameter: a range {low, high[, log]} or {choices: [...]}.

    Read by tune_settings, bounds and choices are values of the hyper-parameter's own type (a range of an
    integer hyper-parameter has integer bounds and is searched over integers)."""

    low: expect(Int | Float | None, "a number") = None
    high: expect(Int | Float | None, "a number") = None
    log: Flag = False
    choices: expect(Values | None, "a non-empty list of values") = None

    @model_validator(mode="after")
    def _one_form(self) -> Dimension:
        got = self.model_dump(exclude_defaults=True)
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise invalid("either {choices: [...]} or {low, high[, log]}, not both", got=got)
            if len({repr(c) for c in self.choices}) < len(self.choices):
                raise invalid("a list without repeats", "choices", got=self.choices)
        elif self.low is None or self.high is None:
            raise invalid("a range {low, high[, log]} or {choices: [...]}", got=got)
        elif not self.low < self.high:
            raise invalid("a range with low < high", got=got)
        elif self.log and not self.low > 0:
            raise invalid("> 0 on a log scale", "low", got=self.low)
        return self


class SpaceSettings(_PerFamily[Dimension]):
    """Search spaces of `make tune`, per family."""


class PrunerSettings(Block):
    n_startup_trials: Seed
    n_warmup_steps: Seed


class TuneSettings(Block):
    """The `tune` block: the Optuna study of churn.tools.tune."""

    family: expect(Literal[MODEL_TYPES] | None, "null (model.type) or one of " + ", ".join(MODEL_TYPES))
    metric: Metric
    n_trials: Count
    timeout_s: OptionalPositive
    seed: Seed
    study_name: OptionalText
    storage: OptionalText
    best_params: Text
    pruner: PrunerSettings
    space: SpaceSettings

    @field_validator("space")
    @classmethod
    def _space_within_the_model(cls, space: SpaceSettings, info: ValidationInfo) -> SpaceSettings:
        """With the model block as context: each bound and choice must be a valid value of its hyper-parameter,
        as the family's own model says, and becomes a value of its type."""
        model = (info.context or {}).get("model")
        if model is None:
            return space  # validated on its own (override: already typed)
        typed = {
            family: {name: _typed_dimension(model, family, name, dim) for name, dim in dims.items()}
            for family in MODEL_TYPES
            if (dims := getattr(space, family)) is not None
        }
        return space.model_copy(update=typed)

    def space_of(self, family: str) -> dict[str, Dimension]:
        """The search space of `family`."""
        space = getattr(self.space, family)
        if space is None:
            raise ChurnError(f"params.yaml: missing key tune.space.{family} (the search space of the tuned family)")
        return space

    def override(self, source: str = "command line", **values: Any) -> TuneSettings:
        """A copy with these keys set (None keeps the current value), validated like params.yaml."""
        raw = {**self.model_dump(), **{k: v for k, v in values.items() if v is not None}}
        return validate(TuneSettings, raw, source, ("tune",))


def _typed_dimension(model: ModelParams, family: str, name: str, dim: Dimension) -> Dimension:
    """`dim` with its bounds or choices as values of the hyper-parameter, validated by the family's model."""
    base = model.family_params(family)

    def typed(value: Any, key: str) -> Any:
        try:
            return getattr(type(base).model_validate({**base.model_dump(), name: value}), name)
        except ValidationError as exc:
            error = exc.errors()[0]
            detail = error.get("ctx", {}).get("expected", error["msg"])
            expected = f"a valid {param_key(family, name)} ({detail})"
            raise invalid(expected, f"{family}.{name}.{key}", got=value) from None

    if dim.choices is not None:
        return dim.model_copy(update={"choices": tuple(typed(c, f"choices[{i}]") for i, c in enumerate(dim.choices))})
    return dim.model_copy(update={"low": typed(dim.low, "low"), "high": typed(dim.high, "high")})


# --- reading --------------------------------------------------------------------------------------------------


def load(path: str | Path = "params.yaml") -> tuple[Params, dict]:
    """params.yaml as a tool reads it: the stages' blocks validated (churn.config), and the raw mapping from which
    the tool validates its own block (generate_settings, sweep_settings, ...)."""
    raw = read_yaml(path)
    return parse_params(raw, source=str(path)), raw


def _block(raw: dict, name: str, model: type[Block], source: str, context: Any = None) -> Any:
    if name not in raw:
        raise ChurnError(f"{source}: missing key {name}")
    return validate(model, raw[name], source, (name,), context)


def generate_settings(raw: dict, source: str = "params.yaml") -> GenerateSettings:
    """The `generate` block of the raw params mapping."""
    return _block(raw, "generate", GenerateSettings, source)


def compare_settings(raw: dict, source: str = "params.yaml") -> CompareSettings:
    """The `compare` block of the raw params mapping."""
    return _block(raw, "compare", CompareSettings, source)


def drift_settings(raw: dict, source: str = "params.yaml") -> DriftSettings:
    """The `drift` block of the raw params mapping."""
    return _block(raw, "drift", DriftSettings, source)


def sweep_settings(raw: dict, source: str = "params.yaml") -> SweepSettings:
    """The `sweep` block of the raw params mapping."""
    return _block(raw, "sweep", SweepSettings, source)


def tune_settings(raw: dict, model: ModelParams, source: str = "params.yaml") -> TuneSettings:
    """The `tune` block of the raw params mapping, its search spaces checked against `model` (the validated
    `model` block): each bound a valid value of its hyper-parameter."""
    return _block(raw, "tune", TuneSettings, source, {"model": model})
