"""Exact contributions per raw column: they add up to the model's log-odds (logistic regression from the train
means, xgboost's TreeSHAP); a random forest has none (one line); each row's top reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import parse_params
from churn.core.explain import column_means, contributions, top_reasons
from churn.core.features import build_preprocessor
from churn.core.generate import generate
from churn.core.models import build_model, calibrated
from churn.errors import ChurnError


@pytest.fixture(scope="module")
def setup(repo_params_raw):
    params = parse_params(repo_params_raw)
    customers = generate(1_500, seed=5)
    train, rows = customers.head(1_200), customers.tail(20).reset_index(drop=True)
    preprocessor = build_preprocessor(params.data, params.featurize).fit(train)
    matrix = preprocessor.transform(train)
    return params, preprocessor, matrix, train["churn"].to_numpy(), rows


def _fit(params, family, matrix, y, method="none"):
    model = params.model.model_copy(update={"type": family})
    return calibrated(build_model(model, seed=0, n_jobs=1), method, 3).fit(matrix, y)


def test_logistic_contributions_add_up_to_the_log_odds(setup):
    params, preprocessor, matrix, y, rows = setup
    model = _fit(params, "logistic_regression", matrix, y)
    _, means = column_means([pd.DataFrame(matrix[:500]), pd.DataFrame(matrix[500:])])
    np.testing.assert_allclose(means, matrix.mean(axis=0), atol=1e-12)
    contrib = contributions(preprocessor, model, rows.drop(columns=["churn"]), means)
    assert list(contrib.columns) == [*params.data.numerical, *params.data.categorical]
    base = model.intercept_[0] + model.coef_[0] @ np.asarray(means)
    logit = model.decision_function(preprocessor.transform(rows))
    np.testing.assert_allclose(contrib.sum(axis=1) + base, logit, atol=1e-9)


def test_xgboost_contributions_add_up_to_the_margin(setup):
    params, preprocessor, matrix, y, rows = setup
    model = _fit(params, "xgboost", matrix, y)
    contrib = contributions(preprocessor, model, rows.drop(columns=["churn"]), None)
    margin = model.predict(preprocessor.transform(rows), output_margin=True)
    bias = margin - contrib.sum(axis=1).to_numpy()
    np.testing.assert_allclose(bias, bias[0], atol=1e-4)  # one bias for every row: the rest is the columns'


def test_a_random_forest_has_no_exact_contributions(setup):
    params, preprocessor, matrix, y, rows = setup
    model = _fit(params, "random_forest", matrix, y)
    with pytest.raises(ChurnError, match=r"^explanations need logistic_regression or xgboost: RandomForestClassifier"):
        contributions(preprocessor, model, rows, None)


def test_top_reasons_name_the_columns_pushing_churn_up(setup):
    params, preprocessor, matrix, y, rows = setup
    _, means = column_means([pd.DataFrame(matrix)])
    model = _fit(params, "logistic_regression", matrix, y, method="isotonic")  # averaged over the folds' models
    features = rows.drop(columns=["churn"])
    contrib = contributions(preprocessor, model, features, means)
    reasons = top_reasons(contrib, features, 3)
    assert list(reasons.columns) == ["reason_1", "reason_2", "reason_3"]
    for i in range(len(rows)):
        best = contrib.iloc[i].idxmax()
        if contrib.iloc[i].max() > 0:
            assert reasons["reason_1"][i].startswith(f"{best}={features[best][i]} (+")
        else:
            assert reasons["reason_1"][i] == ""
    month_to_month = features["contract_type"] == "Month-to-month"
    assert reasons[month_to_month].apply(lambda r: any(s.startswith("contract_type=") for s in r), axis=1).all()
