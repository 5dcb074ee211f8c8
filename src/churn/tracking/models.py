"""Log the inference pipeline (raw columns in, churn probability out) as an MLflow model: its signature on the
raw columns, explicit pip requirements, the types skops may load, the hash that identifies it in the registry,
and the lineage and description a registered version carries."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from churn.system import file_md5

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

    from churn.config import DataParams, Params

MODEL_NAME_IN_RUN = "model"
PIPELINE_BLOCKS = ("data", "prepare", "featurize", "train", "model", "evaluate", "register")
DESCRIPTION_LIMIT = 5000  # characters a model version description holds in MLflow's SQL stores
# Types skops may load besides its defaults: dtype objects and each family's own estimator internals.
_SAFE = ["numpy.dtype"]
TRUSTED_TYPES = {
    "logistic_regression": _SAFE,
    "random_forest": [*_SAFE, "sklearn.tree._tree.Tree"],
    "xgboost": [*_SAFE, "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"],
}
RUNTIME_PACKAGES = {
    "logistic_regression": ["scikit-learn", "skops", "numpy", "scipy", "pandas"],
    "random_forest": ["scikit-learn", "skops", "numpy", "scipy", "pandas"],
    "xgboost": ["scikit-learn", "skops", "numpy", "scipy", "pandas", "xgboost-cpu"],
}


def pip_requirements(model_type: str) -> list[str]:
    """Explicit requirements (inferring them costs seconds: MLflow imports the model in a subprocess)."""
    pins = []
    for package in RUNTIME_PACKAGES[model_type]:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def raw_signature(data: DataParams, example, proba) -> ModelSignature:
    """The signature on the raw columns: categories as strings; numbers as `any`, because MLflow refuses
    int64 -> double and pandas reads a whole-number column of a raw CSV (age, tenure) as int64. The model's
    metadata names the numerical and categorical columns, and `churn.tools.predict` checks the numbers."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), c) for c in data.numerical] + [ColSpec("string", c) for c in data.categorical])
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, proba).outputs)


def model_md5(preprocessor: Path, model: Path, signature: ModelSignature) -> str:
    """One hash for the model, its preprocessing (as DVC recorded them) and the signature it is served with."""
    text = f"{file_md5(preprocessor)}:{file_md5(model)}:{json.dumps(signature.to_dict())}"
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - an identity, not a secret


def log_pipeline(pipeline, data: DataParams, model_type: str, signature: ModelSignature, example) -> ModelInfo:
    """Log `pipeline` to the active run, served by `predict_proba`, in the skops format."""
    import mlflow

    return mlflow.sklearn.log_model(
        pipeline,
        name=MODEL_NAME_IN_RUN,
        signature=signature,
        input_example=example,
        metadata={"numerical": list(data.numerical), "categorical": list(data.categorical)},
        pip_requirements=pip_requirements(model_type),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=TRUSTED_TYPES[model_type],
    )


def lineage_tags(params: Params, run_id: str) -> dict[str, str]:
    """Where a version comes from: commit, DVC experiment, raw data file and hash, model family, run."""
    from churn.tracking.runs import dvc_tags, git_tags

    raw = Path(params.data.raw_path)
    return {
        **git_tags(),
        **dvc_tags(),
        "data.path": str(raw),
        "data.md5": file_md5(raw) if raw.exists() else "",
        "model.type": params.model.type,
        "run_id": run_id,
    }


def describe(lineage: dict[str, str], params: Params, metrics: dict[str, float]) -> str:
    """The version description: lineage, the blocks the stages read (not `mlflow`, whose tracking URI may hold
    a password) and metrics, as JSON; compact if the readable form is too long."""
    blocks = {k: v for k, v in params.model_dump().items() if k in PIPELINE_BLOCKS}
    body = {"lineage": lineage, "params": blocks, "metrics": metrics}
    text = json.dumps(body, indent=1)
    return text if len(text) <= DESCRIPTION_LIMIT else json.dumps(body, separators=(",", ":"))
