"""register: log the full inference pipeline (raw columns in, churn probability out) and, when it passes
the validation gate and differs from every existing version, register it and move the aliases.

in: models/*.pkl, reports/metrics.json, data/prepared/test.parquet | out: reports/register.json
params: register, evaluate.primary_metric, data
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from churn.io import StagedOutputs, file_md5, read_json, read_parquet, read_pickle, write_json
from churn.layout import DECISION, METRICS, MODEL, PREPARED_TEST, PREPROCESSOR
from churn.models import inference_pipeline
from churn.params import Params
from churn.stages import entry
from churn.timing import phase
from churn.tracking import stage_run, store_lock

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


def model_md5(signature_json: str) -> str:
    """One hash for the model, its preprocessing (as DVC recorded them) and the signature it is served with."""
    digest = hashlib.md5(f"{file_md5(PREPROCESSOR)}:{file_md5(MODEL)}:{signature_json}".encode())  # noqa: S324
    return digest.hexdigest()


def raw_signature(data, example, proba):
    """The signature on the raw columns: categories as strings; numbers as `any`, because MLflow refuses
    int64 -> double and pandas reads a whole-number column of a raw CSV (age, tenure) as int64. The model's
    metadata names the numerical and categorical columns, and `churn.predict` checks the numbers."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), c) for c in data.numerical] + [ColSpec("string", c) for c in data.categorical])
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, proba).outputs)


def run(params: Params) -> None:
    import mlflow

    from churn.registry import gate, register

    data = params.data
    inputs = [MODEL, PREPROCESSOR, METRICS, PREPARED_TEST]
    with StagedOutputs("register") as out:
        with stage_run("register", params.mlflow, inputs) as run:
            run.log_params({"register": asdict(params.register)})
            pipeline = inference_pipeline(read_pickle(PREPROCESSOR), read_pickle(MODEL))
            metrics = read_json(METRICS)
            example = read_parquet(PREPARED_TEST)[list(data.features)].head(5)
            signature = raw_signature(data, example, pipeline.predict_proba(example))
            decision = {**gate(metrics, params.register), "model_md5": model_md5(json.dumps(signature.to_dict()))}

            staged = {str(DECISION): out.path(DECISION)}
            write_json(decision, staged[str(DECISION)])
            with phase("logging"):
                info = mlflow.sklearn.log_model(
                    pipeline,
                    name=MODEL_NAME_IN_RUN,
                    signature=signature,
                    input_example=example,
                    metadata={"numerical": list(data.numerical), "categorical": list(data.categorical)},
                    pip_requirements=pip_requirements(params.model.type),
                    pyfunc_predict_fn="predict_proba",
                    skops_trusted_types=TRUSTED_TYPES[params.model.type],
                )
            run.log_artifact(Path("params.yaml"), "lineage")
            run.record_outputs(staged)

            if not decision["passed"]:
                failed = [k for k, c in decision["checks"].items() if not c["passed"]]
                run.set_tags({"registry.decision": f"gate failed: {', '.join(failed)}"})
            else:
                lineage = _lineage(params, metrics, run)
                with store_lock():  # parallel queue workers: one registry change at a time
                    outcome = register(
                        run.store.client,
                        params.register.model_name,
                        info.model_uri,
                        run.run_id,
                        decision["model_md5"],
                        metrics,
                        lineage,
                        describe(lineage, _params_dict(params), metrics),
                        params.evaluate.primary_metric,
                        params.register.min_improvement,
                    )
                run.set_tags({"registry.decision": outcome.reason, "registry.version": str(outcome.version)})
                _log_outcome(params.register.model_name, outcome)
        out.publish()


def _params_dict(params: Params) -> dict:
    """The blocks the pipeline's stages read (not `mlflow`, whose tracking URI may hold a password)."""
    return {k: v for k, v in asdict(params).items() if k in PIPELINE_BLOCKS}


def describe(lineage: dict, params: dict, metrics: dict) -> str:
    """The version description: lineage, params and metrics as JSON, compact if the readable form is too long."""
    body = {"lineage": lineage, "params": params, "metrics": metrics}
    text = json.dumps(body, indent=1)
    return text if len(text) <= DESCRIPTION_LIMIT else json.dumps(body, separators=(",", ":"))


def _lineage(params: Params, metrics: dict, run) -> dict[str, str]:
    from churn.tracking import dvc_tags, git_tags

    raw = Path(params.data.raw_path)
    return {
        **git_tags(),
        **dvc_tags(),
        "data.path": str(raw),
        "data.md5": file_md5(raw) if raw.exists() else "",
        "model.type": params.model.type,
        "run_id": run.run_id,
    }


def _log_outcome(name: str, outcome) -> None:
    import logging

    logging.getLogger(__name__).info("registry %s: version %s (%s)", name, outcome.version, outcome.reason)


def main() -> None:
    entry(run)


if __name__ == "__main__":
    main()
