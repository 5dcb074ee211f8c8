"""params.yaml -> typed, validated, immutable objects (pydantic v2). No hidden defaults: every key a stage reads
must be present (only a threshold, a sweep, a search space and the raw file's encoding and separator have
optional parts).

The file is read as DVC reads it (ruamel.yaml's safe loader, YAML 1.2: `yes` stays the string "yes"), so the code
sees the values `dvc params diff` shows. Every problem is one line naming the file, the dotted key, the value and
what was expected: `params.yaml: model.type must be one of logistic_regression, ..., got 'svm'`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML, YAMLError

from churn.errors import ChurnError, ParamError

MODEL_TYPES = ("logistic_regression", "random_forest", "xgboost")
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


# --- value types: each states what it expects, which is what its error message says -------------------------


def _invalid(expected: str, key: str = "", **ctx: Any) -> PydanticCustomError:
    """`<key> must be <expected>, got <value>`; `key` is below the location validated, `got` replaces the input."""
    return PydanticCustomError("expected", "must be {expected}", {"expected": expected, "key": key, **ctx})


def _expect(kind: Any, expected: str) -> Any:
    """`kind`, whose every validation failure reads `must be <expected>`."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise _invalid(expected) from None

    return Annotated[kind, WrapValidator(check)]


_Bool = Annotated[bool, Field(strict=True)]
_Int = Annotated[int, Field(strict=True)]  # strict: true is not 1, 1.0 and "1" are not integers
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int is a float, a bool is not
_Text = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1)]
_Scalar = _Bool | _Int | _Float | str | None


def _null_as(empty: Any) -> BeforeValidator:
    return BeforeValidator(lambda value: empty if value is None else value)


def _at_least(minimum: int) -> Any:
    return _expect(Annotated[_Int, Field(ge=minimum)], f"an integer >= {minimum}")


def _one_of(*choices: str) -> Any:
    return _expect(Literal[choices], "one of " + ", ".join(choices))


Text = _expect(_Text, "a non-empty string")
OptionalText = _expect(_Text | None, "null or a non-empty string")
Seed = _at_least(0)
Count = _at_least(1)
NonNegative = _expect(Annotated[_Float, Field(ge=0)], "a number >= 0")
Positive = _expect(Annotated[_Float, Field(gt=0)], "a number > 0")
OptionalPositive = _expect(Annotated[_Float, Field(gt=0)] | None, "null or a number > 0")
Fraction = _expect(Annotated[_Float, Field(gt=0, lt=1)], "a number in the open interval (0, 1)")
Share = _expect(Annotated[_Float, Field(gt=0, le=1)], "a number in (0, 1]")
Flag = _expect(_Bool, "true or false")
Columns = _expect(Annotated[tuple[_Text, ...], Field(strict=False), _null_as(())], "a list of column names")
Values = _expect(Annotated[tuple[_Scalar, ...], Field(strict=False, min_length=1)], "a non-empty list of values")
ModelType = _one_of(*MODEL_TYPES)
Metric = _one_of(*METRICS)


# --- blocks ---------------------------------------------------------------------------------------------------


def _only_keys(raw: dict, known: Any, prefix: str = "") -> None:
    for key in raw:
        if key not in known:
            raise PydanticCustomError(
                "unknown_key", "is not a known key", {"key": f"{prefix}{key}", "known": ", ".join(known)}
            )


class _Block(BaseModel):
    """A mapping of params.yaml: immutable; an unknown key is an error that lists the known ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            _only_keys(raw, cls.model_fields)
        elif not isinstance(raw, cls):
            raise _invalid("a mapping")
        return raw


def _known_encoding(value: str) -> str:
    import codecs

    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError("not an encoding") from None
    return value


def _plain_separator(value: str) -> str:
    if value in '"\r\n':
        raise ValueError("a quote or a newline")
    return value


Encoding = _expect(
    Annotated[_Text, AfterValidator(_known_encoding)], "a text encoding Python knows, such as utf-8, latin-1 or cp1252"
)
Separator = _expect(
    Annotated[str, Field(strict=True, min_length=1, max_length=1), AfterValidator(_plain_separator)],
    "one character such as ',', ';' or a tab, not a quote or a newline",
)


class DataParams(_Block):
    raw_path: Text
    id_columns: Columns
    numerical: Columns
    categorical: Columns
    target: Text
    positive_label: _expect(_Bool | _Int | _Float | str, "a scalar label such as 1 or Yes")
    # How the raw CSV (and a CSV given to churn.tools.predict) is written; optional, like pandas' defaults.
    encoding: Encoding = "utf-8"
    separator: Separator = ","

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical

    @model_validator(mode="after")
    def _columns_once_each(self) -> DataParams:
        if not self.features:
            raise _invalid("non-empty (or data.categorical non-empty)", "numerical", got=self.numerical)
        seen: dict[str, str] = {}
        for field in ("id_columns", "numerical", "categorical", "target"):
            columns = (self.target,) if field == "target" else getattr(self, field)
            for index, column in enumerate(columns):
                key = field if field == "target" else f"{field}[{index}]"
                if column in seen:
                    raise _invalid(f"a column not already declared in data.{seen[column]}", key, got=column)
                seen[column] = field
        return self


class GenerateParams(_Block):
    rows: _at_least(10)
    seed: Seed


class PrepareParams(_Block):
    test_size: Fraction
    seed: Seed
    drop_duplicates: Flag
    warn_share: _expect(Annotated[_Float, Field(ge=0, le=1)], "a number in [0, 1]")


class ResourcesParams(_Block):
    """The large-data path, beside the default one: which tables stream, in batches of how many rows, when
    xgboost trains from external memory, and a Dask cluster to train on."""

    streaming_rows: _at_least(0)  # a stage whose input has more rows than this streams it (0: always)
    batch_rows: Count
    external_memory_rows: _at_least(0)  # train splits past this: xgboost from external memory
    cv_sample_rows: _at_least(2)  # past external_memory_rows, CV runs on a stratified sample of this many
    dask_scheduler: _expect(  # empty (or null): DASK_SCHEDULER_ADDRESS if set, else no Dask
        Annotated[str, StringConstraints(strict=True, strip_whitespace=True), _null_as("")],
        "a Dask scheduler address such as tcp://host:8786 (empty for none)",
    )

    def scheduler(self) -> str:
        """The Dask scheduler to use: this block's, else DASK_SCHEDULER_ADDRESS, else "" (no Dask)."""
        import os

        return self.dask_scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip()


class FeaturizeParams(_Block):
    numeric_impute: _one_of("median", "mean")
    scale: Flag
    min_category_frequency: Count


class TrainParams(_Block):
    cv_folds: _at_least(2)
    seed: Seed
    n_jobs: Count


ClassWeight = _expect(Literal["balanced"] | None, "null or balanced")


class LogisticRegressionParams(_Block):
    C: Positive
    max_iter: Count
    class_weight: ClassWeight


class RandomForestParams(_Block):
    n_estimators: Count
    max_depth: _expect(Annotated[_Int, Field(ge=1)] | None, "null or an integer >= 1")
    min_samples_split: _at_least(2)
    min_samples_leaf: Count


class XGBoostParams(_Block):
    n_estimators: Count
    max_depth: Count
    learning_rate: Positive
    subsample: Share
    colsample_bytree: Share


HYPERPARAMETERS: dict[str, type[_Block]] = {
    "logistic_regression": LogisticRegressionParams,
    "random_forest": RandomForestParams,
    "xgboost": XGBoostParams,
}


def param_key(family: str, name: str) -> str:
    """The params.yaml key of a family's hyper-parameter (what `dvc exp run -S` sets), e.g. model.C."""
    return f"model.{name}" if family == "logistic_regression" else f"model.{family}.{name}"


class ModelParams(_Block):
    """The family to train; logistic regression's hyper-parameters sit at the top (`-S model.C=0.1`)."""

    type: ModelType
    C: Positive
    max_iter: Count
    class_weight: ClassWeight
    random_forest: RandomForestParams
    xgboost: XGBoostParams

    def family_params(self, family: str) -> BaseModel:
        """The hyper-parameters of `family`, as its own model."""
        if family == "logistic_regression":
            return LogisticRegressionParams(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight)
        return getattr(self, family)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters of the active family, as logged and passed to the estimator."""
        return self.family_params(self.type).model_dump()


class EvaluateParams(_Block):
    threshold: Fraction
    primary_metric: Metric


class Threshold(_Block):
    """A gate on one test metric: {min: x} for a metric where greater is better, {max: x} for the others."""

    min: _expect(_Float | None, "a number") = None
    max: _expect(_Float | None, "a number") = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Threshold:
        if (self.min is None) == (self.max is None):
            raise _invalid("{min: <number>} or {max: <number>}", got=self.model_dump(exclude_none=True))
        return self

    @property
    def greater_is_better(self) -> bool:
        return self.min is not None

    @property
    def value(self) -> float:
        return self.min if self.min is not None else self.max


class RegisterParams(_Block):
    model_name: Text
    thresholds: dict[str, Threshold]  # metric -> gate
    min_improvement: NonNegative
    allow_other_data: Flag  # compare with a champion trained on other data (another data.md5)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _metric_names(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise _invalid("a mapping of test metric: {min: <number>} or {max: <number>}")
        _only_keys(raw, METRICS)
        return raw

    @field_validator("thresholds")
    @classmethod
    def _metric_directions(cls, thresholds: dict[str, Threshold]) -> dict[str, Threshold]:
        for metric, threshold in thresholds.items():
            if threshold.greater_is_better == (metric in LOWER_IS_BETTER):
                bound = "max" if metric in LOWER_IS_BETTER else "min"
                better = "lower" if metric in LOWER_IS_BETTER else "greater"
                got = threshold.model_dump(exclude_none=True)
                raise _invalid(f"{{{bound}: <number>}} ({better} is better)", metric, got=got)
        return thresholds


class MlflowParams(_Block):
    experiment: Text
    tracking_uri: _expect(  # empty (or null): MLFLOW_TRACKING_URI, else the repository's sqlite store
        Annotated[str, StringConstraints(strict=True, strip_whitespace=True), _null_as("")],
        "a string (empty for the default)",
    )


class CompareParams(_Block):
    sort_by: Metric
    curves: Count


T = TypeVar("T")


class _PerFamily(_Block, Generic[T]):
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
            raise _invalid(f"a non-empty mapping of {info.field_name} hyper-parameters")
        _only_keys(raw, HYPERPARAMETERS[info.field_name].model_fields)
        return raw


class SweepParams(_PerFamily[Values]):
    """Grids queued by `make sweep`: the cross product of one family's value lists."""

    def grids(self) -> dict[str, dict[str, list]]:
        """The families that have a grid, each hyper-parameter -> its values."""
        return {f: {k: list(v) for k, v in grid.items()} for f in MODEL_TYPES if (grid := getattr(self, f))}


class Dimension(_Block):
    """One searched hyper-parameter: a range {low, high[, log]} or {choices: [...]}.

    Within Params, bounds and choices are values of the hyper-parameter's own type (a range of an integer
    hyper-parameter has integer bounds and is searched over integers)."""

    low: _expect(_Int | _Float | None, "a number") = None
    high: _expect(_Int | _Float | None, "a number") = None
    log: Flag = False
    choices: _expect(Values | None, "a non-empty list of values") = None

    @model_validator(mode="after")
    def _one_form(self) -> Dimension:
        got = self.model_dump(exclude_defaults=True)
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise _invalid("either {choices: [...]} or {low, high[, log]}, not both", got=got)
            if len({repr(c) for c in self.choices}) < len(self.choices):
                raise _invalid("a list without repeats", "choices", got=self.choices)
        elif self.low is None or self.high is None:
            raise _invalid("a range {low, high[, log]} or {choices: [...]}", got=got)
        elif not self.low < self.high:
            raise _invalid("a range with low < high", got=got)
        elif self.log and not self.low > 0:
            raise _invalid("> 0 on a log scale", "low", got=self.low)
        return self


class SpaceParams(_PerFamily[Dimension]):
    """Search spaces of `make tune`, per family."""


class PrunerParams(_Block):
    n_startup_trials: Seed
    n_warmup_steps: Seed


class TuneParams(_Block):
    family: _expect(Literal[MODEL_TYPES] | None, "null (model.type) or one of " + ", ".join(MODEL_TYPES))
    metric: Metric
    n_trials: Count
    timeout_s: OptionalPositive
    seed: Seed
    study_name: OptionalText
    storage: OptionalText
    best_params: Text
    pruner: PrunerParams
    space: SpaceParams

    def space_of(self, family: str) -> dict[str, Dimension]:
        """The search space of `family`."""
        space = getattr(self.space, family)
        if space is None:
            raise ChurnError(f"params.yaml: missing key tune.space.{family} (the search space of the tuned family)")
        return space

    def override(self, source: str = "command line", **values: Any) -> TuneParams:
        """A copy with these keys set (None keeps the current value), validated like params.yaml."""
        raw = {**self.model_dump(), **{k: v for k, v in values.items() if v is not None}}
        return _validate(TuneParams, raw, source, ("tune",))


# A field named `register` shadows ABCMeta.register, a class method of every model: pydantic warns, though
# instances read the field all the same (params.register).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Params(_Block):
        data: DataParams
        generate: GenerateParams
        prepare: PrepareParams
        featurize: FeaturizeParams
        train: TrainParams
        model: ModelParams
        evaluate: EvaluateParams
        register: RegisterParams
        mlflow: MlflowParams
        sweep: SweepParams
        compare: CompareParams
        tune: TuneParams
        resources: ResourcesParams

        @field_validator("tune")
        @classmethod
        def _space_within_the_model(cls, tune: TuneParams, info: ValidationInfo) -> TuneParams:
            """Each bound and choice must be a valid value of its hyper-parameter, as the family's model says."""
            model = info.data.get("model")
            if model is None:
                return tune  # the model block's own error comes first
            spaces = {
                family: {name: _typed_dimension(model, family, name, dim) for name, dim in space.items()}
                for family in MODEL_TYPES
                if (space := getattr(tune.space, family)) is not None
            }
            return tune.model_copy(update={"space": tune.space.model_copy(update=spaces)})


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
            raise _invalid(expected, f"space.{family}.{name}.{key}", got=value) from None

    if dim.choices is not None:
        return dim.model_copy(update={"choices": tuple(typed(c, f"choices[{i}]") for i, c in enumerate(dim.choices))})
    return dim.model_copy(update={"low": typed(dim.low, "low"), "high": typed(dim.high, "high")})


# --- reading ----------------------------------------------------------------------------------------------------


def _one_line(error: Any, source: str, prefix: tuple = ()) -> ChurnError:
    """One pydantic error as the one line the user sees."""
    ctx = error.get("ctx", {})
    parts = [*prefix, *error["loc"], ctx.get("key", "")]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts if p != "").lstrip(".")
    if error["type"] == "missing":
        return ChurnError(f"{source}: missing key {key}")
    if error["type"] == "unknown_key":
        return ChurnError(f"{source}: {key} is not a known key (expected one of: {ctx['known']})")
    if error["type"] == "expected":
        return ParamError(key, ctx["expected"], ctx["got"] if "got" in ctx else error["input"], source)
    return ChurnError(f"{source}: {key}: {error['msg']}, got {error['input']!r}")


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], raw: Any, source: str, prefix: tuple = ()) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _one_line(exc.errors()[0], source, prefix) from None


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a raw params mapping; every problem is a one-line ChurnError naming the key."""
    if not isinstance(raw, dict):
        raise ChurnError(f"{source}: expected a mapping of parameter blocks, got {type(raw).__name__}")
    return _validate(Params, raw, source)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data exactly as DVC reads params.yaml: ruamel.yaml's safe loader, YAML 1.2."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ChurnError(f"{path}: not found; run from the repository root") from None
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChurnError(f"{path}: not valid YAML ({problem}{where})") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (relative to the current directory, which DVC sets to the stage's)."""
    return parse_params(read_yaml(path), source=str(path))
