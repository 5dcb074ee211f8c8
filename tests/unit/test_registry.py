"""The registry gate and the direction of improvement (no MLflow needed)."""

from __future__ import annotations

import pytest

from churn.params import RegisterParams
from churn.registry import gate, improvement

THRESHOLDS = RegisterParams(model_name="m", min_roc_auc=0.70, max_log_loss=0.60, min_improvement=0.0)


def test_gate_passes_when_every_threshold_passes():
    decision = gate({"roc_auc": 0.85, "log_loss": 0.40, "accuracy": 0.1}, THRESHOLDS)
    assert decision["passed"] is True
    assert decision["checks"]["roc_auc"] == {"value": 0.85, "min": 0.70, "passed": True}
    assert decision["checks"]["log_loss"] == {"value": 0.40, "max": 0.60, "passed": True}


def test_gate_thresholds_are_inclusive():
    assert gate({"roc_auc": 0.70, "log_loss": 0.60}, THRESHOLDS)["passed"] is True


@pytest.mark.parametrize(
    ("metrics", "failing"),
    [
        ({"roc_auc": 0.69, "log_loss": 0.40}, {"roc_auc"}),
        ({"roc_auc": 0.85, "log_loss": 0.61}, {"log_loss"}),
        ({"roc_auc": 0.50, "log_loss": 0.90}, {"roc_auc", "log_loss"}),
    ],
)
def test_gate_fails_and_says_which_check(metrics, failing):
    decision = gate(metrics, THRESHOLDS)
    assert decision["passed"] is False
    assert {name for name, check in decision["checks"].items() if not check["passed"]} == failing


def test_improvement_higher_is_better_for_roc_auc():
    assert improvement(0.80, 0.75, "roc_auc") == pytest.approx(0.05)
    assert improvement(0.70, 0.75, "roc_auc") == pytest.approx(-0.05)


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
def test_improvement_lower_is_better_for_losses(metric):
    assert improvement(0.30, 0.40, metric) == pytest.approx(0.10)
    assert improvement(0.50, 0.40, metric) == pytest.approx(-0.10)


def test_no_change_is_no_improvement():
    assert improvement(0.8, 0.8, "roc_auc") == 0
    assert improvement(0.3, 0.3, "log_loss") == 0
