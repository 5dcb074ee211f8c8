"""Cumulative gains, lift, precision and recall among the top share of scores (ties counted in proportion)."""

from __future__ import annotations

import numpy as np
import pytest

from churn.core.evaluation import gains, top_share_metrics

Y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])


def test_a_perfect_ranking_finds_the_churners_first():
    proba = np.where(Y == 1, 0.9, 0.1) - np.arange(10) * 0.001  # distinct scores, the churners highest
    assert top_share_metrics(Y, proba, 0.2) == {"precision_at_k": 1.0, "recall_at_k": pytest.approx(2 / 3, abs=1e-6)}
    assert top_share_metrics(Y, proba, 0.3) == {"precision_at_k": 1.0, "recall_at_k": 1.0}
    curve = gains(Y, proba)
    assert curve[2] == {"share": 0.3, "gain": 1.0, "lift": pytest.approx(1 / 0.3, abs=1e-5)}
    assert curve[-1] == {"share": 1.0, "gain": 1.0, "lift": 1.0}


def test_one_tied_score_is_chance():
    proba = np.full(10, 0.5)
    assert top_share_metrics(Y, proba, 0.1) == {"precision_at_k": 0.3, "recall_at_k": 0.1}
    assert gains(Y, proba) == [{"share": 1.0, "gain": 1.0, "lift": 1.0}]


def test_a_cut_inside_a_tie_counts_the_tied_rows_in_proportion():
    proba = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1])  # 0.9: a churner; 2 of the 4 at 0.5
    # top 30%: the 0.9 row and half of the four at 0.5 (2 churners): 1 + 1 churners in 3 rows, of 3 churners.
    expected = pytest.approx(2 / 3, abs=1e-6)
    assert top_share_metrics(Y, proba, 0.3) == {"precision_at_k": expected, "recall_at_k": expected}
    assert top_share_metrics(Y, proba, 0.2) == {"precision_at_k": 0.75, "recall_at_k": 0.5}  # 1 + 0.5 in 2 rows


def test_counts_as_weights_give_the_rows_values():
    labels, scores, counts = np.array([1, 0, 1, 0]), np.array([0.8, 0.8, 0.3, 0.1]), np.array([2, 1, 1, 4])
    rows = np.repeat(labels, counts), np.repeat(scores, counts)
    assert gains(labels, scores, sample_weight=counts) == gains(*rows)
    for share in (0.1, 0.25, 0.5):
        assert top_share_metrics(labels, scores, share, sample_weight=counts) == top_share_metrics(*rows, share)


def test_unknown_top_share_is_one_line(params_raw):
    from churn.config import parse_params
    from churn.errors import ParamError

    params_raw["evaluate"]["top_share"] = 1.5
    with pytest.raises(ParamError, match=r"^params.yaml: evaluate.top_share must be a number in the open interval"):
        parse_params(params_raw)
