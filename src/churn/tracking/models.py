"""Log the inference pipeline (raw columns in, churn probability out) as an MLflow model: its signature on the
raw columns, explicit pip requirements, the types skops may load, the hash that identifies it in the registry,
and the lineage and description a registered version carries."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from churn.system import file_md5, first_line

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

    from churn.config import DataParams, Params

MODEL_NAME_IN_RUN = "model"
PIPELINE_BLOCKS = ("data", "prepare", "featurize", "train", "model", "evaluate", "register")
DESCRIPTION_LIMIT = 5000  # characters a model version description holds in MLflow's SQL stores
# The model as a DVC artifact (dvc.yaml `artifacts:`): the preprocessor and the classifier. Its version vN.0.0
# (git tag churn-model@vN.0.0, made by `churn.tools.artifact`) is registry version N.
MODEL_ARTIFACT = "churn-model"
MODEL_ARTIFACT_PATH = "models"
MODEL_ARTIFACT_FILE = "models/model.pkl"  # the file whose md5 identifies the artifact in dvc.lock
TEST_DATASET = "prepared_test"  # the held-out split, as the prepare stage logs it
# Types skops may load besides its defaults: dtype objects, the calibration wrapper's internals (train.calibration)
# and each family's own estimator internals.
_SAFE = ["numpy.dtype", "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"]
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


def model_md5(preprocessor: Path, model: Path, signature: ModelSignature, references: dict) -> str:
    """One hash for the model, its preprocessing (as DVC recorded them), the signature it is served with and the
    references from the train split it carries in its metadata (the drift profile, the feature means that
    explanations start from): a version registered without them is a different version."""
    text = f"{file_md5(preprocessor)}:{file_md5(model)}:{json.dumps(signature.to_dict())}"
    text += f":{json.dumps(references, sort_keys=True)}"
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - an identity, not a secret


def serving_metadata(
    data: DataParams, labels: tuple[str, str], threshold: float, profile: dict, feature_means: list[float]
) -> dict:
    """What scoring needs besides the model (churn.tools.predict, churn.tools.serve): the column roles, the
    target's name, its labels as the raw table spells them (negative, positive), the threshold the test
    metrics were computed at, the train split's profile that drift is measured against (churn.core.drift) and the
    train means of the transformed features that explanations start from (churn.core.explain)."""
    return {
        "numerical": list(data.numerical),
        "categorical": list(data.categorical),
        "target": data.target,
        "labels": list(labels),
        "threshold": threshold,
        "profile": profile,
        "feature_means": feature_means,
    }


def log_pipeline(
    run_id: str,
    experiment_id: str,
    params: dict[str, str],
    pipeline,
    data: DataParams,
    model_type: str,
    signature: ModelSignature,
    example,
    labels: tuple[str, str],
    threshold: float,
    profile: dict,
    feature_means: list[float],
) -> tuple[ModelInfo, dict]:
    """Log `pipeline` to run `run_id` as a LoggedModel of `experiment_id` with `params`, served by
    `predict_proba`, in the skops format, with the metadata that scoring reads (serving_metadata: `labels` as
    the raw table spells them, `threshold` for the label).

    Returns the model's info and the serving checks (`serving_checks` on `example`), run on the very files that
    are uploaded, between MLflow saving them and uploading them: nothing is downloaded back to check it."""
    from types import SimpleNamespace

    import mlflow
    from mlflow.models import Model

    checks: dict = {}

    def save_and_check(path: str, **kwargs) -> None:
        kwargs.pop("validate_serving_input", None)  # ours are the checks below
        mlflow.sklearn.save_model(path=path, **kwargs)
        checks.update(serving_checks(path, example))

    # Created here, in the run's experiment, with the run's params (which are sent when the stage ends).
    model = mlflow.initialize_logged_model(
        name=MODEL_NAME_IN_RUN, source_run_id=run_id, params=params, experiment_id=experiment_id
    )
    info = Model.log(
        artifact_path=None,
        name=MODEL_NAME_IN_RUN,
        model_id=model.model_id,
        flavor=SimpleNamespace(__name__=mlflow.sklearn.__name__, save_model=save_and_check),
        run_id=run_id,
        sk_model=pipeline,
        signature=signature,
        input_example=example,
        metadata=serving_metadata(data, labels, threshold, profile, feature_means),
        pip_requirements=pip_requirements(model_type),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=TRUSTED_TYPES[model_type],
        validate_serving_input=False,  # MLflow's own check only warns; serving_checks decides
    )
    return info, checks


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
        **artifact_tags(),
    }


def artifact_tags() -> dict[str, str]:
    """The DVC artifact a version is: its name and path in dvc.yaml, and the md5 DVC records for the classifier
    (how `churn.tools.artifact` finds the commit holding it, and adds that git rev)."""
    model = Path(MODEL_ARTIFACT_FILE)
    md5 = file_md5(model) if model.exists() else ""
    return {"dvc.artifact": MODEL_ARTIFACT, "dvc.artifact.path": MODEL_ARTIFACT_PATH, "dvc.artifact.md5": md5}


def describe(lineage: dict[str, str], params: Params, metrics: dict[str, float]) -> str:
    """The version description: lineage, the blocks the stages read (not `mlflow`, whose tracking URI may hold
    a password) and metrics, as JSON; compact if the readable form is too long."""
    blocks = {k: v for k, v in params.model_dump().items() if k in PIPELINE_BLOCKS}
    body = {"lineage": lineage, "params": blocks, "metrics": metrics}
    text = json.dumps(body, indent=1)
    return text if len(text) <= DESCRIPTION_LIMIT else json.dumps(body, separators=(",", ":"))


def test_dataset(test_split: Path):
    """The held-out split as prepare logged it (name, digest), as an mlflow.entities.DatasetInput: what the
    model's test metrics are linked to."""
    from mlflow.entities import Dataset, DatasetInput

    return DatasetInput(Dataset(TEST_DATASET, file_md5(test_split), "local", str(test_split)), tags=[])


def serving_checks(model_path: str, rows) -> dict:
    """MLflow's `validate_serving_input` on a saved model's serving example and on `rows` (the held-out split's
    first rows) converted to the serving format, each expected to score every row it sends:
    `{"passed", "checks": {name: {"passed", "rows" or "error"}}}`."""
    import warnings

    from mlflow.models import convert_input_example_to_serving_input
    from mlflow.models.utils import load_serving_example

    payloads = {
        "serving_example": load_serving_example,
        "test_rows": lambda _: convert_input_example_to_serving_input(rows),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # validate_serving_input's deprecation notice
        checks = {name: _serves(model_path, payload) for name, payload in payloads.items()}
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks}


def with_serving(decision: dict, serving: dict) -> dict:
    """`decision` with the serving checks added, and passed only if they pass too (a model that cannot be
    served fails the gate); no checks at all (the model was never saved) fail too."""
    if not serving:
        failed = {"passed": False, "error": "the model was not saved, so it could not be checked"}
        serving = {"passed": False, "checks": {"serving_example": failed, "test_rows": failed}}
    return {**decision, "serving": serving, "passed": bool(decision["passed"] and serving["passed"])}


def _serves(model_path: str, payload) -> dict:
    """One serving check: `payload(model_path)` is the JSON a client would send; it must score every row."""
    from mlflow.models import validate_serving_input

    try:
        body = payload(model_path)
        scored = validate_serving_input(model_path, body)
        sent = len(json.loads(body).get("dataframe_split", {}).get("data", []))
        if sent and len(scored) != sent:
            return {"passed": False, "error": f"{len(scored)} predictions for {sent} rows"}
    except Exception as exc:  # noqa: BLE001 - whatever breaks serving fails the check, in one line
        return {"passed": False, "error": first_line(exc)[:300]}
    return {"passed": True, "rows": len(scored)}
