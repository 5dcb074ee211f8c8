"""train: build the model family named by model.type, cross-validate it on the train split, fit it.

in: data/prepared/train.parquet, data/features/train.parquet, models/preprocessor.pkl
out: models/model.pkl, reports/cv_metrics.json | params: model, train, data.target, evaluate.threshold,
resources (in memory, from external memory or on a Dask cluster: mode(), churn.pipeline.scale)
"""

from __future__ import annotations

from churn.config import Params
from churn.core.models import build_model, calibrated, iter_cv_folds, single_threaded_blas, summarise_folds
from churn.errors import ChurnError, DataError
from churn.pipeline import entry, scale
from churn.storage.outputs import StagedOutputs, read_pickle, write_json, write_pickle
from churn.storage.parquet import parquet_rows, read_parquet
from churn.storage.paths import CV_METRICS, FEATURES_TRAIN, MODEL, PREPARED_TRAIN, PREPROCESSOR
from churn.tracking.runs import stage_run


def cross_validate(params: Params, prepared_train, preprocessor) -> tuple[list[dict], dict[str, float]]:
    """Fold metrics and their summary: the same code path `churn.tools.tune` uses."""
    target = params.data.target
    smallest = int(prepared_train[target].value_counts().min())
    if smallest < params.train.cv_folds:
        raise DataError(
            str(PREPARED_TRAIN),
            f"smallest class has {smallest} rows in the train split; train.cv_folds={params.train.cv_folds} needs more",
        )
    estimator = estimator_of(params)
    folds = list(
        iter_cv_folds(
            preprocessor,
            estimator,
            prepared_train,
            target,
            params.train.cv_folds,
            params.train.seed,
            params.evaluate.threshold,
        )
    )
    return folds, summarise_folds(folds)


def estimator_of(params: Params):
    """The unfitted estimator train fits in memory: model.type, calibrated as train.calibration says."""
    model = build_model(params.model, params.train.seed, params.train.n_jobs)
    return calibrated(model, params.train.calibration, params.train.cv_folds)


def mode(params: Params, rows: int) -> tuple[str, str]:
    """How train fits a split of `rows` rows, the one rule: ("dask", address) for xgboost with a Dask scheduler
    configured; else ("external", "") past resources.external_memory_rows rows (xgboost only: another family is
    a one-line error); else ("memory", "")."""
    limit, family = params.resources.external_memory_rows, params.model.type
    address = params.resources.scheduler() if family == "xgboost" else ""
    if address:
        return "dask", address
    if rows <= limit:
        return "memory", ""
    if family != "xgboost":
        raise ChurnError(
            f"params.yaml: model.type {family} trains in memory and the train split has {rows:,} rows, "
            f"past resources.external_memory_rows={limit:,}; use model.type xgboost (trains from external "
            "memory), or raise resources.external_memory_rows if the split fits in memory"
        )
    return "external", ""


def run(params: Params) -> None:
    target = params.data.target
    inputs = [PREPARED_TRAIN, FEATURES_TRAIN, PREPROCESSOR]
    rows = parquet_rows(FEATURES_TRAIN)
    how, address = mode(params, rows)
    if how != "memory" and params.train.calibration != "none":
        raise ChurnError(
            f"params.yaml: train.calibration {params.train.calibration} needs an in-memory fit and train fits "
            f"{'on Dask' if how == 'dask' else 'from external memory'}; set train.calibration: none"
        )
    with StagedOutputs("train") as out:
        with stage_run("train", params.mlflow, inputs) as run:
            run.log_params(
                {
                    "model": {"type": params.model.type, **params.model.hyperparameters()},
                    "train": params.train.model_dump(),
                }
            )
            if rows > params.resources.external_memory_rows:  # cross-validation on a sample (scale.py says why)
                prepared_train = scale.stratified_sample(params, PREPARED_TRAIN, params.resources.cv_sample_rows)
            else:
                prepared_train = read_parquet(PREPARED_TRAIN)
            preprocessor = read_pickle(PREPROCESSOR)

            folds, summary = cross_validate(params, prepared_train, preprocessor)
            run.log_steps(folds, prefix="fold_")
            run.log_metrics(summary, prefix="cv_")

            if how == "dask":
                model = scale.fit_dask(params, FEATURES_TRAIN, address)
            elif how == "external":
                model = scale.fit_external(params, FEATURES_TRAIN, out.root / "xgboost-cache")
            else:
                features_train = read_parquet(FEATURES_TRAIN)
                model = estimator_of(params)
                with single_threaded_blas():
                    model.fit(features_train.drop(columns=[target]).to_numpy(), features_train[target].to_numpy())

            staged = {str(MODEL): out.path(MODEL), str(CV_METRICS): out.path(CV_METRICS)}
            write_pickle(model, staged[str(MODEL)])
            write_json(summary, staged[str(CV_METRICS)])
            run.log_artifact(staged[str(CV_METRICS)], "reports")
            run.record_outputs(staged)
        out.publish()


if __name__ == "__main__":
    entry(run)
