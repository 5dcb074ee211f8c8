"""Calibration: the reliability curve and ECE from weighted distinct scores, train.calibration's wrapper, and
the direction test (isotonic calibration does not make a model's ECE worse on held-out customers)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV

from churn.config import parse_params
from churn.core.evaluation import reliability
from churn.core.features import build_preprocessor, raw_feature_importance
from churn.core.generate import generate
from churn.core.models import build_model, calibrated, inference_pipeline
from churn.errors import ParamError


def test_ece_is_the_share_weighted_gap_between_observed_and_predicted():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    proba = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    curve, ece = reliability(y, proba)
    assert curve == [
        {"predicted": 0.1, "observed": pytest.approx(1 / 6, abs=1e-6), "rows": 6},
        {"predicted": 0.9, "observed": 0.5, "rows": 4},
    ]
    assert ece == pytest.approx(0.6 * (1 / 6 - 0.1) + 0.4 * 0.4, abs=1e-6)


def test_counts_as_weights_give_the_rows_curve():
    labels, scores, counts = np.array([0, 1, 0]), np.array([0.2, 0.2, 0.75]), np.array([3, 1, 2])
    rows = np.repeat(labels, counts), np.repeat(scores, counts)
    assert reliability(labels, scores, sample_weight=counts) == reliability(*rows)


def test_a_perfectly_calibrated_score_has_no_error():
    rng = np.random.default_rng(0)
    proba = np.repeat([0.05, 0.35, 0.65, 0.95], 20_000)
    _, ece = reliability((rng.random(len(proba)) < proba).astype(int), proba)
    assert ece < 0.01


def test_unknown_calibration_is_one_line(params_raw):
    params_raw["train"]["calibration"] = "platt"
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    assert str(caught.value) == ("params.yaml: train.calibration must be one of none, sigmoid, isotonic, got 'platt'")


def test_calibrated_wraps_the_estimator_only_when_asked(params_raw):
    model = build_model(parse_params(params_raw).model, seed=0, n_jobs=1)
    assert calibrated(model, "none", 5) is model
    wrapper = calibrated(model, "isotonic", 4)
    assert isinstance(wrapper, CalibratedClassifierCV)
    assert (wrapper.method, wrapper.cv) == ("isotonic", 4)


@pytest.fixture(scope="module")
def sample():
    customers = generate(6000, seed=42)
    return customers.head(4000), customers.tail(2000)


def _ece(params, sample, method: str, **model) -> tuple[float, object]:
    train, test = sample
    estimator = calibrated(build_model(params.model.model_copy(update=model), seed=0, n_jobs=1), method, 5)
    pipeline = inference_pipeline(build_preprocessor(params.data, params.featurize), estimator)
    pipeline.fit(train, train["churn"])
    return reliability(test["churn"].to_numpy(), pipeline.predict_proba(test)[:, 1])[1], pipeline


def test_direction_isotonic_ece_is_not_above_uncalibrated(repo_params_raw, sample):
    params = parse_params(repo_params_raw)
    isotonic, pipeline = _ece(params, sample, "isotonic")
    assert isotonic <= _ece(params, sample, "none")[0]
    importance = raw_feature_importance(pipeline["preprocess"], pipeline["model"])  # averaged over the folds
    assert importance.sum() == pytest.approx(1.0) and importance.index[0] in {"contract_type", "tenure"}


def test_direction_isotonic_repairs_balanced_class_weights(repo_params_raw, sample):
    # Balanced class weights inflate every probability: a badly calibrated model that isotonic calibration fixes.
    params = parse_params(repo_params_raw)
    assert (
        _ece(params, sample, "isotonic", class_weight="balanced")[0]
        < _ece(params, sample, "none", class_weight="balanced")[0] / 3
    )
