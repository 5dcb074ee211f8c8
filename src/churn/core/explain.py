"""Exact per-row contributions to the log-odds of churn, summed per raw column, and each row's top reasons.

- logistic regression: coefficient x (x - train mean) on each transformed column (the linear model's SHAP values
  with independent features), the train means of the transformed columns recorded when the model is registered;
- xgboost: the booster's own TreeSHAP values (`pred_contribs=True`);
- a calibrated model: the mean of its folds' models' contributions (before the calibration map, which is
  monotone);
- random forest: scikit-learn has no exact contributions, so none are given (a one-line error).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.core.features import raw_feature_of_outputs
from churn.errors import ChurnError


def column_means(batches) -> tuple[list[str], list[float]]:
    """The columns and means of the transformed train split (data/features/train.parquet without the target),
    from its batches."""
    names: list[str] = []
    total, rows = None, 0
    for frame in batches:
        names = list(frame.columns)
        sums = frame.to_numpy(dtype=np.float64).sum(axis=0)
        total = sums if total is None else total + sums
        rows += len(frame)
    return names, [] if total is None else [float(v) for v in total / max(rows, 1)]


def _estimators(model) -> list:
    if hasattr(model, "calibrated_classifiers_"):
        return [c.estimator for c in model.calibrated_classifiers_]
    return [model]


def _one(estimator, matrix: np.ndarray, reference: list[float] | None) -> np.ndarray:
    name = type(estimator).__name__
    if name == "LogisticRegression":
        if not reference:
            raise ChurnError("the model carries no train means of its features (registered before explanations)")
        return (matrix - np.asarray(reference)) * np.asarray(estimator.coef_[0])
    if name == "XGBClassifier":
        from xgboost import DMatrix

        return estimator.get_booster().predict(DMatrix(matrix), pred_contribs=True)[:, :-1]
    raise ChurnError(f"explanations need logistic_regression or xgboost: {name} has no exact contributions")


def contributions(preprocessor, model, features: pd.DataFrame, reference: list[float] | None) -> pd.DataFrame:
    """Rows x raw columns: each raw column's contribution to the row's log-odds of churn."""
    matrix = preprocessor.transform(features)
    values = np.mean([_one(e, matrix, reference) for e in _estimators(model)], axis=0)
    owners = raw_feature_of_outputs(preprocessor)
    return pd.DataFrame(values, columns=owners).T.groupby(level=0, sort=False).sum().T


def top_reasons(contrib: pd.DataFrame, features: pd.DataFrame, count: int) -> pd.DataFrame:
    """Columns reason_1..reason_<count>: the raw columns pushing each row's churn odds up the most, as
    `column=value (+log-odds)`; empty where fewer columns push it up."""
    values = contrib.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :count]
    names = np.asarray(contrib.columns)
    out = {}
    for rank in range(min(count, values.shape[1])):
        column = order[:, rank]
        pushed = values[np.arange(len(values)), column]
        out[f"reason_{rank + 1}"] = [
            f"{names[c]}={features[names[c]].iloc[i]} ({p:+.2f})" if p > 0 else ""
            for i, (c, p) in enumerate(zip(column, pushed, strict=True))
        ]
    return pd.DataFrame(out)
