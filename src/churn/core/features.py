"""The preprocessing: imputation, scaling and one-hot encoding fitted on the train split only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.config import DataParams, FeaturizeParams
from churn.core.streaming import MISSING


def build_preprocessor(data: DataParams, params: FeaturizeParams) -> ColumnTransformer:
    """An unfitted ColumnTransformer from the declared raw columns to a dense numeric matrix."""
    parts = []
    if data.numerical:
        # keep_empty_features: a column with no value in the train split still yields one output column,
        # so outputs map one-to-one onto the declared features.
        steps = [("impute", SimpleImputer(strategy=params.numeric_impute, keep_empty_features=True))]
        if params.scale:
            steps.append(("scale", StandardScaler()))
        parts.append(("num", Pipeline(steps), list(data.numerical)))
    if data.categorical:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=params.min_category_frequency,
            sparse_output=False,
        )
        # Missing categories arrive as NaN (from parquet) or None (from a caller's raw rows): one imputer
        # each, since SimpleImputer matches a single marker (and skops cannot store pd.NA, which matches both).
        nan = SimpleImputer(strategy="constant", fill_value=MISSING)
        none = SimpleImputer(strategy="constant", fill_value=MISSING, missing_values=None)
        steps = [("impute_nan", nan), ("impute_none", none), ("onehot", encoder)]
        parts.append(("cat", Pipeline(steps), list(data.categorical)))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=True)


def transform(preprocessor: ColumnTransformer, frame: pd.DataFrame) -> pd.DataFrame:
    """Apply a fitted preprocessor; the result keeps the transformer's output feature names."""
    matrix = preprocessor.transform(frame)
    return pd.DataFrame(matrix, columns=list(preprocessor.get_feature_names_out()))


def raw_feature_of_outputs(preprocessor: ColumnTransformer) -> list[str]:
    """For each output column of a fitted preprocessor, the raw column it came from."""
    owners: list[str] = []
    for name, transformer, columns in preprocessor.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        if name == "num":
            owners.extend(columns)
            continue
        encoder = transformer.named_steps["onehot"]
        # Name the inputs with unambiguous sentinels so each output maps back to exactly one column,
        # even when one raw column's name is a prefix of another's.
        sentinels = [f"\x00{i}\x00" for i in range(len(columns))]
        for out in encoder.get_feature_names_out(sentinels):
            owners.append(columns[int(out.split("\x00")[1])])
    return owners


def raw_feature_importance(preprocessor: ColumnTransformer, model) -> pd.Series:
    """Importance per raw feature (summed over its encoded columns), normalised to sum to 1. A calibrated
    model (CalibratedClassifierCV) has one fitted model per calibration fold: their importances are averaged."""
    if hasattr(model, "calibrated_classifiers_"):
        weights = np.mean([_weights(c.estimator) for c in model.calibrated_classifiers_], axis=0)
    else:
        weights = _weights(model)
    owners = raw_feature_of_outputs(preprocessor)
    series = pd.Series(weights, index=owners).groupby(level=0, sort=False).sum()
    total = series.sum()
    return (series / total if total > 0 else series).sort_values(ascending=False)


def _weights(model) -> np.ndarray:
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=float)
    return np.abs(np.asarray(model.coef_, dtype=float)).ravel()
