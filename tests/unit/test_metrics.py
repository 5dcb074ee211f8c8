"""Classifier metrics and curve data: the eight keys, a perfect predictor, thinned finite curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churn.config import METRICS
from churn.core.evaluation import MAX_CURVE_POINTS, classification_metrics, classification_report, pr_points, roc_points

Y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0])


def test_perfect_predictor():
    proba = np.where(Y == 1, 0.9, 0.1)
    values = classification_metrics(Y, proba, threshold=0.5)
    assert set(values) == set(METRICS)
    assert len(values) == 8
    assert values["roc_auc"] == 1.0
    assert values["pr_auc"] == 1.0
    assert values["accuracy"] == 1.0
    assert values["precision"] == values["recall"] == values["f1"] == 1.0
    assert values["brier"] == pytest.approx(0.01)
    assert values["log_loss"] == pytest.approx(-math.log(0.9), abs=1e-6)


def test_threshold_decides_the_labels():
    proba = np.where(Y == 1, 0.6, 0.4)
    assert classification_metrics(Y, proba, threshold=0.5)["accuracy"] == 1.0
    high = classification_metrics(Y, proba, threshold=0.7)
    assert high["recall"] == 0.0
    assert high["precision"] == 0.0  # zero_division=0: no warning, no NaN
    assert high["accuracy"] == pytest.approx(0.6)
    assert high["roc_auc"] == 1.0  # the ranking does not depend on the threshold


def test_certain_wrong_predictions_have_finite_log_loss():
    values = classification_metrics(Y, 1.0 - Y.astype(float), threshold=0.5)
    assert values["accuracy"] == 0.0
    assert math.isfinite(values["log_loss"])
    assert values["log_loss"] > 10


def test_values_are_plain_rounded_floats():
    rng = np.random.default_rng(0)
    values = classification_metrics(Y, rng.random(len(Y)), threshold=0.5)
    assert all(type(v) is float for v in values.values())
    assert all(round(v, 6) == v for v in values.values())


@pytest.fixture(scope="module")
def noisy():
    """Enough distinct scores that the raw curves have more than MAX_CURVE_POINTS points."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=5000)
    proba = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)
    return y, proba


def test_roc_points_are_thinned_and_finite(noisy):
    from sklearn.metrics import roc_curve

    y, proba = noisy
    assert len(roc_curve(y, proba)[0]) > MAX_CURVE_POINTS  # so that thinning is really exercised
    points = roc_points(y, proba)
    assert 2 <= len(points) <= MAX_CURVE_POINTS
    assert all(set(p) == {"fpr", "tpr", "threshold"} for p in points)
    assert all(math.isfinite(v) for p in points for v in p.values())
    assert (points[0]["fpr"], points[0]["tpr"]) == (0.0, 0.0)
    assert (points[-1]["fpr"], points[-1]["tpr"]) == (1.0, 1.0)
    assert [p["fpr"] for p in points] == sorted(p["fpr"] for p in points)


def test_pr_points_are_thinned_and_finite(noisy):
    from sklearn.metrics import precision_recall_curve

    y, proba = noisy
    assert len(precision_recall_curve(y, proba)[0]) > MAX_CURVE_POINTS
    points = pr_points(y, proba)
    assert 2 <= len(points) <= MAX_CURVE_POINTS
    assert all(set(p) == {"recall", "precision", "threshold"} for p in points)
    assert all(math.isfinite(v) for p in points for v in p.values())
    assert points[0]["recall"] == 1.0
    assert points[-1]["recall"] == 0.0


def test_short_curves_are_kept_whole():
    points = roc_points(Y, np.linspace(0.05, 0.95, len(Y)))
    assert len(points) < MAX_CURVE_POINTS
    assert points[0]["threshold"] == 1.0  # sklearn's leading threshold is inf; JSON cannot hold it
    assert all(math.isfinite(p["threshold"]) for p in points)


def test_classification_report_names_the_positive_label():
    report = classification_report(Y, Y, positive_label="Yes")
    assert report["Yes"]["recall"] == 1.0
    assert report["not Yes"]["support"] == 6
