"""Load params.yaml once into typed, validated objects. No hidden defaults: every key must be present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from churn.errors import ChurnError, ParamError

MODEL_TYPES = ("logistic_regression", "random_forest", "xgboost")
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


@dataclass(frozen=True)
class DataParams:
    raw_path: str
    id_columns: tuple[str, ...]
    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    target: str
    positive_label: Any

    @property
    def features(self) -> tuple[str, ...]:
        return self.numerical + self.categorical


@dataclass(frozen=True)
class GenerateParams:
    rows: int
    seed: int


@dataclass(frozen=True)
class PrepareParams:
    test_size: float
    seed: int


@dataclass(frozen=True)
class FeaturizeParams:
    numeric_impute: str
    scale: bool
    min_category_frequency: int


@dataclass(frozen=True)
class TrainParams:
    cv_folds: int
    seed: int
    n_jobs: int


@dataclass(frozen=True)
class ModelParams:
    type: str
    C: float
    max_iter: int
    class_weight: str | None
    random_forest: dict[str, Any]
    xgboost: dict[str, Any]

    def hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters of the active family, as logged and passed to the estimator."""
        if self.type == "logistic_regression":
            return {"C": self.C, "max_iter": self.max_iter, "class_weight": self.class_weight}
        return dict(getattr(self, self.type))


@dataclass(frozen=True)
class EvaluateParams:
    threshold: float
    primary_metric: str


@dataclass(frozen=True)
class RegisterParams:
    model_name: str
    min_roc_auc: float
    max_log_loss: float
    min_improvement: float


@dataclass(frozen=True)
class MlflowParams:
    experiment: str
    tracking_uri: str


@dataclass(frozen=True)
class CompareParams:
    sort_by: str
    curves: int


@dataclass(frozen=True)
class Params:
    data: DataParams
    generate: GenerateParams
    prepare: PrepareParams
    featurize: FeaturizeParams
    train: TrainParams
    model: ModelParams
    evaluate: EvaluateParams
    register: RegisterParams
    mlflow: MlflowParams
    sweep: dict[str, dict[str, list[Any]]]
    compare: CompareParams


RF_KEYS = {
    "n_estimators": int,
    "max_depth": int,
    "min_samples_split": int,
    "min_samples_leaf": int,
}
XGB_KEYS = {
    "n_estimators": int,
    "max_depth": int,
    "learning_rate": float,
    "subsample": float,
    "colsample_bytree": float,
}


class _Reader:
    """Typed access to one block of the raw mapping, with errors that name the dotted key."""

    def __init__(self, raw: dict, prefix: str, source: str) -> None:
        self.raw, self.prefix, self.source = raw, prefix, source

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str) -> Any:
        if not isinstance(self.raw, dict) or name not in self.raw:
            raise ChurnError(f"{self.source}: missing key {self.key(name)}")
        return self.raw[name]

    def block(self, name: str) -> _Reader:
        value = self.get(name)
        if not isinstance(value, dict):
            raise ParamError(self.key(name), "a mapping", value, self.source)
        return _Reader(value, self.key(name), self.source)

    def string(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str) or not value:
            raise ParamError(self.key(name), "a non-empty string", value, self.source)
        return value

    def integer(self, name: str, minimum: int | None = None) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(self.key(name), "an integer", value, self.source)
        if minimum is not None and value < minimum:
            raise ParamError(self.key(name), f"an integer >= {minimum}", value, self.source)
        return value

    def number(self, name: str) -> float:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(self.key(name), "a number", value, self.source)
        return float(value)

    def positive(self, name: str) -> float:
        value = self.number(name)
        if not value > 0:
            raise ParamError(self.key(name), "a number > 0", value, self.source)
        return value

    def fraction(self, name: str, closed: bool = False) -> float:
        value = self.number(name)
        ok = 0 <= value <= 1 if closed else 0 < value < 1
        bounds = "in [0, 1]" if closed else "in the open interval (0, 1)"
        if not ok:
            raise ParamError(self.key(name), f"a number {bounds}", value, self.source)
        return value

    def boolean(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise ParamError(self.key(name), "true or false", value, self.source)
        return value

    def columns(self, name: str, allow_empty: bool = True) -> tuple[str, ...]:
        value = self.get(name)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ParamError(self.key(name), "a list of column names", value, self.source)
        if not allow_empty and not value:
            raise ParamError(self.key(name), "a non-empty list of column names", value, self.source)
        return tuple(value)

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.get(name)
        if value not in choices:
            raise ParamError(self.key(name), "one of " + ", ".join(choices), value, self.source)
        return value

    def hyper(self, name: str, spec: dict[str, type], nullable: tuple[str, ...] = ()) -> dict[str, Any]:
        block = self.block(name)
        unknown = sorted(set(block.raw) - set(spec))
        if unknown:
            raise ParamError(block.key(unknown[0]), "one of " + ", ".join(spec), "unknown key", self.source)
        out: dict[str, Any] = {}
        for key, kind in spec.items():
            if key in nullable and block.get(key) is None:
                out[key] = None
            elif kind is int:
                out[key] = block.integer(key, minimum=1)
            elif key in ("subsample", "colsample_bytree"):
                out[key] = block.fraction(key, closed=True)
                if out[key] == 0:
                    raise ParamError(block.key(key), "a number in (0, 1]", 0, self.source)
            else:
                out[key] = block.positive(key)
        if "min_samples_split" in out and out["min_samples_split"] < 2:
            raise ParamError(block.key("min_samples_split"), "an integer >= 2", out["min_samples_split"], self.source)
        return out


def _optional_string(reader: _Reader, name: str) -> str:
    value = reader.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParamError(reader.key(name), "a string (empty for the default)", value, reader.source)
    return value.strip()


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a raw params mapping; every problem is a one-line ChurnError naming the key."""
    if not isinstance(raw, dict):
        raise ChurnError(f"{source}: expected a mapping of parameter blocks, got {type(raw).__name__}")
    root = _Reader(raw, "", source)

    d = root.block("data")
    data = DataParams(
        raw_path=d.string("raw_path"),
        id_columns=d.columns("id_columns"),
        numerical=d.columns("numerical"),
        categorical=d.columns("categorical"),
        target=d.string("target"),
        positive_label=d.get("positive_label"),
    )
    if not data.features:
        raise ParamError("data.numerical", "non-empty (or data.categorical non-empty)", [], source)
    if data.positive_label is None or isinstance(data.positive_label, (list, dict)):
        raise ParamError("data.positive_label", "a scalar label such as 1 or Yes", data.positive_label, source)
    declared = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    repeated = sorted({c for c in declared if declared.count(c) > 1})
    if repeated:
        raise ChurnError(f"{source}: column {repeated[0]!r} is declared more than once in the data block")

    g = root.block("generate")
    p = root.block("prepare")
    f = root.block("featurize")
    t = root.block("train")
    m = root.block("model")
    e = root.block("evaluate")
    r = root.block("register")
    ml = root.block("mlflow")

    class_weight = m.get("class_weight")
    if class_weight not in (None, "balanced"):
        raise ParamError("model.class_weight", "null or balanced", class_weight, source)

    return Params(
        data=data,
        generate=GenerateParams(rows=g.integer("rows", minimum=10), seed=g.integer("seed", minimum=0)),
        prepare=PrepareParams(test_size=p.fraction("test_size"), seed=p.integer("seed", minimum=0)),
        featurize=FeaturizeParams(
            numeric_impute=f.choice("numeric_impute", ("median", "mean")),
            scale=f.boolean("scale"),
            min_category_frequency=f.integer("min_category_frequency", minimum=1),
        ),
        train=TrainParams(
            cv_folds=t.integer("cv_folds", minimum=2),
            seed=t.integer("seed", minimum=0),
            n_jobs=t.integer("n_jobs", minimum=1),
        ),
        model=ModelParams(
            type=m.choice("type", MODEL_TYPES),
            C=m.positive("C"),
            max_iter=m.integer("max_iter", minimum=1),
            class_weight=class_weight,
            random_forest=m.hyper("random_forest", RF_KEYS, nullable=("max_depth",)),
            xgboost=m.hyper("xgboost", XGB_KEYS),
        ),
        evaluate=EvaluateParams(
            threshold=e.fraction("threshold"),
            primary_metric=e.choice("primary_metric", METRICS),
        ),
        register=RegisterParams(
            model_name=r.string("model_name"),
            min_roc_auc=r.fraction("min_roc_auc", closed=True),
            max_log_loss=r.positive("max_log_loss"),
            min_improvement=r.number("min_improvement"),
        ),
        mlflow=MlflowParams(experiment=ml.string("experiment"), tracking_uri=_optional_string(ml, "tracking_uri")),
        sweep=_sweep(root.block("sweep")),
        compare=CompareParams(
            sort_by=root.block("compare").choice("sort_by", METRICS),
            curves=root.block("compare").integer("curves", minimum=1),
        ),
    )


def _sweep(block: _Reader) -> dict[str, dict[str, list[Any]]]:
    """Grids per family: every key must be a hyper-parameter of that family, every value a non-empty list."""
    keys = {
        "logistic_regression": ("C", "max_iter", "class_weight"),
        "random_forest": tuple(RF_KEYS),
        "xgboost": tuple(XGB_KEYS),
    }
    grids: dict[str, dict[str, list[Any]]] = {}
    for family, grid in block.raw.items():
        if family not in keys:
            raise ParamError(block.key(family), "a model family: " + ", ".join(MODEL_TYPES), "unknown", block.source)
        inner = block.block(family)
        for key, values in grid.items():
            if key not in keys[family]:
                raise ParamError(
                    inner.key(key), f"a {family} hyper-parameter: " + ", ".join(keys[family]), "unknown", block.source
                )
            if not isinstance(values, list) or not values:
                raise ParamError(inner.key(key), "a non-empty list of values", values, block.source)
        grids[family] = {k: list(v) for k, v in grid.items()}
    return grids


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (relative to the current directory, which DVC sets to the stage's)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ChurnError(f"{path}: not found; run from the repository root") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChurnError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw, source=str(path))
