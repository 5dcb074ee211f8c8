"""The model families named by model.type, and cross-validation on the train split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from churn.config import ModelParams
from churn.core.evaluation import classification_metrics


def build_model(model: ModelParams, seed: int, n_jobs: int):
    """An unfitted estimator of the family `model.type` with that family's hyper-parameters."""
    hyper = model.hyperparameters()
    if model.type == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(random_state=seed, **hyper)
    if model.type == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **hyper)
    if model.type == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(tree_method="hist", random_state=seed, n_jobs=n_jobs, eval_metric="logloss", **hyper)
    raise ValueError(f"unknown model.type {model.type!r}")  # params validation already rejects this


def calibrated(estimator, method: str, folds: int):
    """`estimator` itself for method "none"; else scikit-learn's CalibratedClassifierCV around it ("sigmoid" or
    "isotonic"), fitted on `folds` stratified folds (in order, no shuffling: nothing random) of whatever it is
    fitted on, which is the train split only: each fold's model is calibrated on the rows it did not see."""
    if method == "none":
        return estimator
    from sklearn.calibration import CalibratedClassifierCV

    return CalibratedClassifierCV(estimator, method=method, cv=folds)


def single_threaded_blas():
    """BLAS on one thread: these fits are too small to gain from more, and parallel `dvc queue` workers
    (or tuning workers) would oversubscribe the cores. The families' own n_jobs (train.n_jobs) still apply."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def inference_pipeline(preprocessor, estimator) -> Pipeline:
    """Raw columns in, churn probability out (predict_proba[:, 1])."""
    return Pipeline([("preprocess", preprocessor), ("model", estimator)])


def iter_cv_folds(
    preprocessor,
    estimator,
    frame: pd.DataFrame,
    target: str,
    folds: int,
    seed: int,
    threshold: float,
) -> Iterator[dict[str, float]]:
    """Yield each fold's validation metrics; the preprocessor is refitted inside every fold (no leakage).

    Tuning consumes the folds one at a time so that a pruner can stop a bad trial early.
    """
    y = frame[target].to_numpy()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, valid_idx in splitter.split(np.zeros(len(y)), y):
        pipeline = inference_pipeline(clone(preprocessor), clone(estimator))
        with single_threaded_blas():
            pipeline.fit(frame.iloc[train_idx], y[train_idx])
            proba = pipeline.predict_proba(frame.iloc[valid_idx])[:, 1]
        yield classification_metrics(y[valid_idx], proba, threshold)


def summarise_folds(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric across folds, plus `<metric>_std`."""
    table = pd.DataFrame(fold_metrics)
    summary: dict[str, float] = {}
    for name in table.columns:
        summary[name] = round(float(table[name].mean()), 6)
        summary[f"{name}_std"] = round(float(table[name].std(ddof=0)), 6)
    return summary
