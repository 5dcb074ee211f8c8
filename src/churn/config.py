"""params.yaml -> typed, validated, immutable objects (pydantic v2): the blocks the stages read. No hidden defaults:
every key a stage reads must be present (only a threshold and the raw file's encoding and separator have optional
parts). The blocks only tools read (TOOL_BLOCKS) are validated by those tools (churn.tools.settings), with the
value types and the one-line errors defined here.

The file is read as DVC reads it (ruamel.yaml's safe loader, YAML 1.2: `yes` stays the string "yes"), so the code
sees the values `dvc params diff` shows. Every problem is one line naming the file, the dotted key, the value and
what was expected: `params.yaml: model.type must be one of logistic_regression, ..., got 'svm'`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML, YAMLError

from churn.errors import ChurnError, ParamError

MODEL_TYPES = ("logistic_regression", "random_forest", "xgboost")
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
# What register.thresholds may gate: the test metrics, and the lowest ROC AUC over evaluate.slices' values.
GATED_METRICS = (*METRICS, "worst_slice_roc_auc")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


# --- value types: each states what it expects, which is what its error message says -------------------------


def invalid(expected: str, key: str = "", **ctx: Any) -> PydanticCustomError:
    """`<key> must be <expected>, got <value>`; `key` is below the location validated, `got` replaces the input."""
    return PydanticCustomError("expected", "must be {expected}", {"expected": expected, "key": key, **ctx})


def expect(kind: Any, expected: str) -> Any:
    """`kind`, whose every validation failure reads `must be <expected>`."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise invalid(expected) from None

    return Annotated[kind, WrapValidator(check)]


Bool = Annotated[bool, Field(strict=True)]
Int = Annotated[int, Field(strict=True)]  # strict: true is not 1, 1.0 and "1" are not integers
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int is a float, a bool is not
Str = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1)]
Scalar = Bool | Int | Float | str | None


def _null_as(empty: Any) -> BeforeValidator:
    return BeforeValidator(lambda value: empty if value is None else value)


def at_least(minimum: int) -> Any:
    """An integer >= `minimum`."""
    return expect(Annotated[Int, Field(ge=minimum)], f"an integer >= {minimum}")


def _one_of(*choices: str) -> Any:
    return expect(Literal[choices], "one of " + ", ".join(choices))


Text = expect(Str, "a non-empty string")
Seed = at_least(0)
Count = at_least(1)
NonNegative = expect(Annotated[Float, Field(ge=0)], "a number >= 0")
Positive = expect(Annotated[Float, Field(gt=0)], "a number > 0")
Fraction = expect(Annotated[Float, Field(gt=0, lt=1)], "a number in the open interval (0, 1)")
Share = expect(Annotated[Float, Field(gt=0, le=1)], "a number in (0, 1]")
Flag = expect(Bool, "true or false")
Columns = expect(Annotated[tuple[Str, ...], Field(strict=False), _null_as(())], "a list of column names")
ModelType = _one_of(*MODEL_TYPES)
Metric = _one_of(*METRICS)


# --- blocks ---------------------------------------------------------------------------------------------------


def only_keys(raw: dict, known: Any, prefix: str = "") -> None:
    """An unknown key of `raw` as the error that names it and lists the `known` ones."""
    for key in raw:
        if key not in known:
            raise PydanticCustomError(
                "unknown_key", "is not a known key", {"key": f"{prefix}{key}", "known": ", ".join(known)}
            )


class Block(BaseModel):
    """A mapping of params.yaml: immutable; an unknown key is an error that lists the known ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            only_keys(raw, cls.model_fields)
        elif not isinstance(raw, cls):
            raise invalid("a mapping")
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


Encoding = expect(
    Annotated[Str, AfterValidator(_known_encoding)], "a text encoding Python knows, such as utf-8, latin-1 or cp1252"
)
Separator = expect(
    Annotated[str, Field(strict=True, min_length=1, max_length=1), AfterValidator(_plain_separator)],
    "one character such as ',', ';' or a tab, not a quote or a newline",
)


class DataParams(Block):
    raw_path: Text
    id_columns: Columns
    numerical: Columns
    categorical: Columns
    target: Text
    positive_label: expect(Bool | Int | Float | str, "a scalar label such as 1 or Yes")
    # How the raw CSV (and a CSV given to churn.tools.predict) is written; optional, like pandas' defaults.
    encoding: Encoding = "utf-8"
    separator: Separator = ","

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical

    @model_validator(mode="after")
    def _columns_once_each(self) -> DataParams:
        if not self.features:
            raise invalid("non-empty (or data.categorical non-empty)", "numerical", got=self.numerical)
        seen: dict[str, str] = {}
        for field in ("id_columns", "numerical", "categorical", "target"):
            columns = (self.target,) if field == "target" else getattr(self, field)
            for index, column in enumerate(columns):
                key = field if field == "target" else f"{field}[{index}]"
                if column in seen:
                    raise invalid(f"a column not already declared in data.{seen[column]}", key, got=column)
                seen[column] = field
        return self


class PrepareParams(Block):
    test_size: Fraction
    seed: Seed
    drop_duplicates: Flag
    warn_share: expect(Annotated[Float, Field(ge=0, le=1)], "a number in [0, 1]")


class ResourcesParams(Block):
    """How much a stage holds at once (never what it computes): the rows of a batch, when xgboost trains from
    external memory, and a Dask cluster to train on."""

    batch_rows: Count  # prepare, featurize and evaluate read and write tables this many rows at a time
    external_memory_rows: at_least(0)  # train splits past this: xgboost from external memory
    cv_sample_rows: at_least(2)  # past external_memory_rows, CV runs on a stratified sample of this many
    dask_scheduler: expect(  # empty (or null): DASK_SCHEDULER_ADDRESS if set, else no Dask
        Annotated[str, StringConstraints(strict=True, strip_whitespace=True), _null_as("")],
        "a Dask scheduler address such as tcp://host:8786 (empty for none)",
    )

    def scheduler(self) -> str:
        """The Dask scheduler to use: this block's, else DASK_SCHEDULER_ADDRESS, else "" (no Dask)."""
        import os

        return self.dask_scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip()


class FeaturizeParams(Block):
    numeric_impute: _one_of("median", "mean")
    scale: Flag
    min_category_frequency: Count


CALIBRATIONS = ("none", "sigmoid", "isotonic")


class TrainParams(Block):
    cv_folds: at_least(2)
    seed: Seed
    n_jobs: Count
    calibration: _one_of(*CALIBRATIONS)  # scikit-learn's CalibratedClassifierCV on the train split's folds


ClassWeight = expect(Literal["balanced"] | None, "null or balanced")


class LogisticRegressionParams(Block):
    C: Positive
    max_iter: Count
    class_weight: ClassWeight


class RandomForestParams(Block):
    n_estimators: Count
    max_depth: expect(Annotated[Int, Field(ge=1)] | None, "null or an integer >= 1")
    min_samples_split: at_least(2)
    min_samples_leaf: Count


class XGBoostParams(Block):
    n_estimators: Count
    max_depth: Count
    learning_rate: Positive
    subsample: Share
    colsample_bytree: Share


class ModelParams(Block):
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


class BootstrapParams(Block):
    """Seeded percentile bootstrap intervals of the test metrics (churn.core.bootstrap)."""

    resamples: Count
    confidence: Fraction
    seed: Seed


class EvaluateParams(Block):
    threshold: Fraction
    primary_metric: Metric
    bootstrap: BootstrapParams
    top_share: Fraction  # precision_at_k and recall_at_k among this share of customers with the highest scores
    slices: Columns  # declared columns whose values (quantile bins for a number) get their own metrics
    slice_bins: at_least(2)  # quantile bins of a numeric slice column


class Threshold(Block):
    """A gate on one test metric: {min: x} for a metric where greater is better, {max: x} for the others."""

    min: expect(Float | None, "a number") = None
    max: expect(Float | None, "a number") = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Threshold:
        if (self.min is None) == (self.max is None):
            raise invalid("{min: <number>} or {max: <number>}", got=self.model_dump(exclude_none=True))
        return self

    @property
    def greater_is_better(self) -> bool:
        return self.min is not None

    @property
    def value(self) -> float:
        return self.min if self.min is not None else self.max


class CardParams(Block):
    """What the model card says a person should and should not use the model for (reports/model_card.md)."""

    intended_use: Text
    limits: list[Text]


class RegisterParams(Block):
    model_name: Text
    thresholds: dict[str, Threshold]  # metric -> gate
    min_improvement: NonNegative
    allow_other_data: Flag  # compare with a champion trained on other data (another data.md5)
    profile_bins: at_least(2)  # quantile bins per numeric column of the training profile (drift reference)
    card: CardParams  # the model card's intended use and limits

    @field_validator("thresholds", mode="before")
    @classmethod
    def _metric_names(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise invalid("a mapping of test metric: {min: <number>} or {max: <number>}")
        only_keys(raw, GATED_METRICS)
        return raw

    @field_validator("thresholds")
    @classmethod
    def _metric_directions(cls, thresholds: dict[str, Threshold]) -> dict[str, Threshold]:
        for metric, threshold in thresholds.items():
            if threshold.greater_is_better == (metric in LOWER_IS_BETTER):
                bound = "max" if metric in LOWER_IS_BETTER else "min"
                better = "lower" if metric in LOWER_IS_BETTER else "greater"
                got = threshold.model_dump(exclude_none=True)
                raise invalid(f"{{{bound}: <number>}} ({better} is better)", metric, got=got)
        return thresholds


class MlflowParams(Block):
    experiment: Text
    tracking_uri: expect(  # empty (or null): MLFLOW_TRACKING_URI, else the repository's sqlite store
        Annotated[str, StringConstraints(strict=True, strip_whitespace=True), _null_as("")],
        "a string (empty for the default)",
    )


# The blocks of params.yaml that no stage reads: each is validated by the tool that reads it (churn.tools.settings),
# so a mistake in one fails that tool only, and its model can change without re-running a stage. Named here so
# that any other unknown top-level key is still an error.
TOOL_BLOCKS = ("generate", "sweep", "compare", "tune", "drift")

# A field named `register` shadows ABCMeta.register, a class method of every model: pydantic warns, though
# instances read the field all the same (params.register).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Params(Block):
        """The blocks the stages read; the tools' blocks (TOOL_BLOCKS) are set aside unread."""

        data: DataParams
        prepare: PrepareParams
        featurize: FeaturizeParams
        train: TrainParams
        model: ModelParams
        evaluate: EvaluateParams
        register: RegisterParams
        mlflow: MlflowParams
        resources: ResourcesParams

        @model_validator(mode="before")
        @classmethod
        def _known_keys(cls, raw: Any) -> Any:
            if isinstance(raw, dict):
                only_keys(raw, [*cls.model_fields, *TOOL_BLOCKS])
                return {key: value for key, value in raw.items() if key not in TOOL_BLOCKS}
            if not isinstance(raw, cls):
                raise invalid("a mapping")
            return raw

        @model_validator(mode="after")
        def _slices_are_declared(self) -> Params:
            for index, column in enumerate(self.evaluate.slices):
                if column not in self.data.features:
                    expected = "a column of data.numerical or data.categorical"
                    raise invalid(expected, f"evaluate.slices[{index}]", got=column)
            return self


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


def validate(model: type[M], raw: Any, source: str, prefix: tuple = (), context: Any = None) -> M:
    """`raw` validated by `model`; the first problem is a one-line ChurnError naming `source` and the dotted key
    (under `prefix`, the keys above `raw` in the file). `context`: pydantic's validation context."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise _one_line(exc.errors()[0], source, prefix) from None


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a raw params mapping; every problem is a one-line ChurnError naming the key."""
    if not isinstance(raw, dict):
        raise ChurnError(f"{source}: expected a mapping of parameter blocks, got {type(raw).__name__}")
    return validate(Params, raw, source)


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
