"""train: build the model family named by model.type, cross-validate it on the train split, fit it.

in: data/prepared/train.parquet, data/features/train.parquet, models/preprocessor.pkl
out: models/model.pkl, reports/cv_metrics.json | params: model, train, data.target, evaluate.threshold
"""

from __future__ import annotations

from churn.config import Params
from churn.core.models import build_model, iter_cv_folds, single_threaded_blas, summarise_folds
from churn.errors import DataError
from churn.pipeline import entry
from churn.pipeline.batches import stored_rows
from churn.pipeline.files import StagedOutputs, read_parquet, read_pickle, write_json, write_pickle
from churn.pipeline.paths import CV_METRICS, FEATURES_TRAIN, MODEL, PREPARED_TRAIN, PREPROCESSOR
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
    estimator = build_model(params.model, params.train.seed, params.train.n_jobs)
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


def large_path(params: Params):
    """The large-data path's plan (a train split past resources.external_memory_rows, or xgboost with a Dask
    scheduler configured), else None; imported only then."""
    if stored_rows(FEATURES_TRAIN) <= params.resources.external_memory_rows and not (
        params.model.type == "xgboost" and params.resources.scheduler()
    ):
        return None
    from churn.pipeline.large import train

    return train.plan(params, FEATURES_TRAIN)


def run(params: Params) -> None:
    target = params.data.target
    inputs = [PREPARED_TRAIN, FEATURES_TRAIN, PREPROCESSOR]
    large = large_path(params)  # None on the default path
    with StagedOutputs("train") as out:
        with stage_run("train", params.mlflow, inputs) as run:
            run.log_params(
                {
                    "model": {"type": params.model.type, **params.model.hyperparameters()},
                    "train": params.train.model_dump(),
                }
            )
            if large:
                prepared_train = large.cv_frame(PREPARED_TRAIN)
            else:
                prepared_train = read_parquet(PREPARED_TRAIN)
                features_train = read_parquet(FEATURES_TRAIN)
            preprocessor = read_pickle(PREPROCESSOR)

            folds, summary = cross_validate(params, prepared_train, preprocessor)
            run.log_steps(folds, prefix="fold_")
            run.log_metrics(summary, prefix="cv_")

            if large:
                model = large.fit(FEATURES_TRAIN, out.root)
            else:
                model = build_model(params.model, params.train.seed, params.train.n_jobs)
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
