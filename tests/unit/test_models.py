"""Model families from params, cross-validation folds, and behaviour tests of a fitted model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier

from churn.config import METRICS, parse_params
from churn.core.features import build_preprocessor
from churn.core.generate import generate
from churn.core.models import build_model, inference_pipeline, iter_cv_folds, summarise_folds

FAMILIES = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "xgboost": XGBClassifier,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_build_model_returns_the_family_with_params_and_seed(params_raw, family):
    params_raw["model"]["type"] = family
    params = parse_params(params_raw)
    model = build_model(params.model, seed=123, n_jobs=1)
    assert type(model) is FAMILIES[family]
    settings = model.get_params()
    assert settings["random_state"] == 123
    expected = params.model.hyperparameters()
    assert expected  # each family has hyper-parameters in params.yaml
    assert {k: settings[k] for k in expected} == expected
    if family != "logistic_regression":
        assert expected == params_raw["model"][family]
        assert settings["n_jobs"] == 1


def test_logistic_regression_takes_top_level_params(params_raw):
    params_raw["model"].update(C=0.25, max_iter=77, class_weight="balanced")
    model = build_model(parse_params(params_raw).model, seed=0, n_jobs=1)
    assert (model.C, model.max_iter, model.class_weight) == (0.25, 77, "balanced")


@pytest.fixture(scope="module")
def params(repo_params_raw):
    return parse_params(repo_params_raw)


@pytest.fixture(scope="module")
def customers_600():
    return generate(600, seed=21)


def test_iter_cv_folds_yields_one_dict_per_fold(params, customers_600):
    pre = build_preprocessor(params.data, params.featurize)
    model = build_model(params.model, seed=0, n_jobs=1)
    frame = customers_600.head(120)
    folds = list(iter_cv_folds(pre, model, frame, "churn", folds=3, seed=0, threshold=0.5))
    assert len(folds) == 3
    assert all(set(fold) == set(METRICS) for fold in folds)
    assert all(0.0 <= fold["roc_auc"] <= 1.0 for fold in folds)
    assert not hasattr(pre, "transformers_")  # the preprocessor passed in is cloned, never fitted in place
    again = list(iter_cv_folds(pre, model, frame, "churn", folds=3, seed=0, threshold=0.5))
    assert again == folds  # seeded folds
    summary = summarise_folds(folds)
    assert summary["roc_auc"] == pytest.approx(np.mean([f["roc_auc"] for f in folds]), abs=1e-6)
    assert set(summary) == set(METRICS) | {f"{m}_std" for m in METRICS}


@pytest.fixture(scope="module")
def fitted(params, customers_600):
    """Logistic regression from raw columns, fitted on a few hundred generated customers."""
    pipeline = inference_pipeline(
        build_preprocessor(params.data, params.featurize), build_model(params.model, seed=0, n_jobs=1)
    )
    return pipeline.fit(customers_600.head(500), customers_600["churn"].head(500))


@pytest.fixture(scope="module")
def unseen(customers_600):
    return customers_600.tail(100).drop(columns=["churn"]).reset_index(drop=True)


def test_model_learns_something(fitted, customers_600, unseen):
    from sklearn.metrics import roc_auc_score

    proba = fitted.predict_proba(unseen)[:, 1]
    assert roc_auc_score(customers_600["churn"].tail(100), proba) > 0.7


def test_invariance_customer_id_changes_nothing(fitted, unseen):
    renamed = unseen.assign(customer_id=[f"X{i:05d}" for i in range(len(unseen))][::-1])
    np.testing.assert_array_equal(fitted.predict_proba(renamed), fitted.predict_proba(unseen))


def test_direction_two_year_contract_lowers_churn(fitted, unseen):
    monthly = fitted.predict_proba(unseen.assign(contract_type="Month-to-month"))[:, 1]
    two_year = fitted.predict_proba(unseen.assign(contract_type="Two year"))[:, 1]
    assert (two_year < monthly).all()


def test_direction_longer_tenure_lowers_churn(fitted, unseen):
    short = fitted.predict_proba(unseen.assign(tenure=2.0, total_charges=unseen["monthly_charges"] * 2))[:, 1]
    long = fitted.predict_proba(unseen.assign(tenure=60.0, total_charges=unseen["monthly_charges"] * 60))[:, 1]
    assert (long < short).all()
