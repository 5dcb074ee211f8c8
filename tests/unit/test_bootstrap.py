"""Bootstrap intervals from distinct (score, label) pairs: the unresampled weights give scikit-learn's metrics,
the intervals are seeded, contain the point estimate and narrow as the test split grows."""

from __future__ import annotations

import numpy as np
import pytest

from churn.core.bootstrap import CI_METRICS, bootstrap_intervals, resample_metrics
from churn.core.evaluation import classification_metrics
from churn.core.streaming import ScoreCounts


def _pairs(rows: int, seed: int = 0):
    """A noisy classifier's scores, rounded so that scores repeat and tie across the classes."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.3).astype(int)
    scores = np.round(np.clip(rng.normal(0.3 + 0.25 * labels, 0.2), 0.01, 0.99), 2)
    counts = ScoreCounts()
    counts.update(labels, scores)
    return counts.arrays()


def test_the_counts_as_weights_give_scikit_learns_metrics():
    labels, scores, counts = _pairs(500)
    expected = classification_metrics(labels, scores, 0.5, sample_weight=counts)
    got = resample_metrics(labels, scores, counts[None, :], 0.5)
    for name in CI_METRICS:
        assert got[name][0] == pytest.approx(expected[name], abs=1e-6), name


def test_intervals_are_seeded_and_hold_the_point_estimate():
    labels, scores, counts = _pairs(500)
    first = bootstrap_intervals(labels, scores, counts, 0.5, resamples=200, confidence=0.95, seed=3)
    assert first == bootstrap_intervals(labels, scores, counts, 0.5, resamples=200, confidence=0.95, seed=3)
    assert first != bootstrap_intervals(labels, scores, counts, 0.5, resamples=200, confidence=0.95, seed=4)
    point = classification_metrics(labels, scores, 0.5, sample_weight=counts)
    for name in CI_METRICS:
        assert first[f"{name}_ci_low"] <= point[name] <= first[f"{name}_ci_high"], name


def test_blocks_of_resamples_change_nothing(monkeypatch):
    import churn.core.bootstrap as bootstrap

    labels, scores, counts = _pairs(300)
    whole = bootstrap_intervals(labels, scores, counts, 0.5, resamples=50, confidence=0.9, seed=1)
    monkeypatch.setattr(bootstrap, "BLOCK_ENTRIES", 7 * len(counts))  # blocks of 7 resamples
    assert bootstrap_intervals(labels, scores, counts, 0.5, resamples=50, confidence=0.9, seed=1) == whole


def test_intervals_narrow_as_the_test_split_grows():
    small = bootstrap_intervals(*_pairs(300), 0.5, resamples=300, confidence=0.95, seed=0)
    large = bootstrap_intervals(*_pairs(5000), 0.5, resamples=300, confidence=0.95, seed=0)
    for name in CI_METRICS:
        small_width = small[f"{name}_ci_high"] - small[f"{name}_ci_low"]
        large_width = large[f"{name}_ci_high"] - large[f"{name}_ci_low"]
        assert large_width < small_width / 2, name  # about 1 / sqrt(5000 / 300) = 0.24 of it


def test_a_resample_without_positives_has_no_auc():
    got = resample_metrics(np.array([0, 1]), np.array([0.2, 0.8]), np.array([[2, 0], [1, 1]]), 0.5)
    assert np.isnan(got["roc_auc"][0]) and np.isnan(got["pr_auc"][0])
    assert got["roc_auc"][1] == 1.0
