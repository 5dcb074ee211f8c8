"""The registry gate: thresholds from params and the champion comparison, checked by MLflow's MetricThreshold
(no store needed)."""

from __future__ import annotations

import math

import pytest

from churn.config import RegisterParams
from churn.tracking.registry import failures, gate


def thresholds(**bounds: dict[str, float]):
    """`register.thresholds` as params.yaml gives it, validated by the config."""
    settings = {
        "min_improvement": 0.0,
        "allow_other_data": False,
        "profile_bins": 10,
        "card": {"intended_use": "u", "limits": []},
    }
    return RegisterParams(model_name="m", thresholds=bounds, **settings).thresholds


DEFAULT = thresholds(roc_auc={"min": 0.70}, log_loss={"max": 0.60})


def versus(metrics: dict, champion: dict, metric: str = "roc_auc", min_improvement: float = 0.0) -> dict:
    return gate(metrics, {}, champion, primary_metric=metric, min_improvement=min_improvement)


def test_gate_passes_when_every_threshold_passes():
    decision = gate({"roc_auc": 0.85, "log_loss": 0.40, "accuracy": 0.1}, DEFAULT)
    assert decision == {
        "passed": True,
        "checks": {
            "roc_auc": {"value": 0.85, "min": 0.70, "passed": True},
            "log_loss": {"value": 0.40, "max": 0.60, "passed": True},
        },
    }
    assert failures(decision) == []


def test_gate_thresholds_are_inclusive():
    assert gate({"roc_auc": 0.70, "log_loss": 0.60}, DEFAULT)["passed"] is True


@pytest.mark.parametrize(
    ("metrics", "reasons"),
    [
        ({"roc_auc": 0.69, "log_loss": 0.40}, ["roc_auc = 0.69: needs >= 0.7"]),
        ({"roc_auc": 0.85, "log_loss": 0.61}, ["log_loss = 0.61: needs <= 0.6"]),
        ({"roc_auc": 0.50, "log_loss": 0.90}, ["roc_auc = 0.5: needs >= 0.7", "log_loss = 0.9: needs <= 0.6"]),
    ],
)
def test_gate_fails_on_min_or_max_and_says_which_in_one_line_each(metrics, reasons):
    decision = gate(metrics, DEFAULT)
    assert decision["passed"] is False
    failed = {name for name, check in decision["checks"].items() if not check["passed"]}
    assert failed == {line.split()[0] for line in reasons}
    assert failures(decision) == reasons


def test_gate_takes_any_metric_from_params():
    gates = thresholds(f1={"min": 0.5}, brier={"max": 0.2})
    decision = gate({"f1": 0.4, "brier": 0.1, "roc_auc": 0.1}, gates)
    assert decision["checks"] == {
        "f1": {"value": 0.4, "min": 0.5, "passed": False},
        "brier": {"value": 0.1, "max": 0.2, "passed": True},
    }
    assert failures(decision) == ["f1 = 0.4: needs >= 0.5"]


def test_a_metric_missing_from_the_test_metrics_fails():
    decision = gate({"roc_auc": 0.9}, DEFAULT)
    assert decision["checks"]["log_loss"] == {"value": None, "max": 0.60, "passed": False}
    assert failures(decision) == ["log_loss: missing from the metrics"]


def test_a_nan_metric_fails():
    assert gate({"roc_auc": math.nan, "log_loss": 0.3}, DEFAULT)["passed"] is False


def test_no_thresholds_pass():
    assert gate({"roc_auc": 0.1}, {}) == {"passed": True, "checks": {}}


# --- the champion comparison ------------------------------------------------------------------------


def test_without_a_margin_a_strictly_better_score_beats_the_champion():
    decision = versus({"roc_auc": 0.81}, {"roc_auc": 0.80})
    assert decision["passed"] is True
    assert decision["champion"] == {
        "metric": "roc_auc",
        "value": 0.81,
        "champion": 0.80,
        "min_improvement": 0.0,
        "passed": True,
    }


def test_without_a_margin_the_smallest_gain_counts_and_a_tie_does_not():
    assert versus({"roc_auc": math.nextafter(0.8, 1.0)}, {"roc_auc": 0.8})["passed"] is True
    tie = versus({"roc_auc": 0.8}, {"roc_auc": 0.8})
    assert tie["passed"] is False
    assert failures(tie) == ["roc_auc = 0.8: needs > champion's 0.8"]
    assert versus({"roc_auc": 0.79}, {"roc_auc": 0.8})["passed"] is False


def test_with_a_margin_the_gain_must_reach_it():
    assert versus({"roc_auc": 0.81}, {"roc_auc": 0.80}, min_improvement=0.01)["passed"] is True  # exactly
    assert versus({"roc_auc": 0.82}, {"roc_auc": 0.80}, min_improvement=0.01)["passed"] is True
    short = versus({"roc_auc": 0.805}, {"roc_auc": 0.80}, min_improvement=0.01)
    assert short["passed"] is False
    assert failures(short) == ["roc_auc = 0.805: needs >= champion's 0.8 + 0.01"]


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
def test_lower_is_better_metrics_must_go_down(metric):
    assert versus({metric: 0.30}, {metric: 0.40}, metric)["passed"] is True
    assert versus({metric: 0.40}, {metric: 0.40}, metric)["passed"] is False
    assert versus({metric: 0.45}, {metric: 0.40}, metric)["passed"] is False
    assert versus({metric: math.nextafter(0.5, 0.0)}, {metric: 0.5}, metric)["passed"] is True  # one float below
    assert versus({metric: 0.35}, {metric: 0.40}, metric, min_improvement=0.05)["passed"] is True
    short = versus({metric: 0.38}, {metric: 0.40}, metric, min_improvement=0.05)
    assert failures(short) == [f"{metric} = 0.38: needs <= champion's 0.4 - 0.05"]


@pytest.mark.parametrize("champion", [{}, {"roc_auc": math.nan}, {"accuracy": 0.9}])
def test_a_champion_without_the_metric_is_not_beaten(champion):
    decision = versus({"roc_auc": 0.99}, champion)
    assert decision["passed"] is False
    assert failures(decision)[0].startswith("roc_auc: no number to compare")


def test_thresholds_and_champion_together_pass_only_when_both_do():
    metrics = {"roc_auc": 0.85, "log_loss": 0.40}
    both = gate(metrics, DEFAULT, {"roc_auc": 0.80}, primary_metric="roc_auc", min_improvement=0.0)
    assert both["passed"] is True
    beaten = gate(metrics, DEFAULT, {"roc_auc": 0.90}, primary_metric="roc_auc", min_improvement=0.0)
    assert beaten["passed"] is False
    assert all(c["passed"] for c in beaten["checks"].values())
    assert failures(beaten) == ["roc_auc = 0.85: needs > champion's 0.9"]


def test_the_gate_keeps_mlflow_quiet():
    # MLflow logs "Model validation passed!" on every call; the gate makes several, one per check.
    import logging

    chatty = logging.getLogger("mlflow.models.evaluation.validation")
    original, seen = chatty.level, []
    chatty.setLevel(logging.INFO)  # other tests may have quietened MLflow's loggers already
    level = chatty.level
    handler = logging.Handler()
    handler.emit = seen.append
    chatty.addHandler(handler)
    try:
        gate({"roc_auc": 0.85, "log_loss": 0.40}, DEFAULT, {"roc_auc": 0.8}, primary_metric="roc_auc")
        assert seen == []
        assert chatty.level == level
        chatty.info("still heard after the gate")
        assert len(seen) == 1  # the level is restored
    finally:
        chatty.removeHandler(handler)
        chatty.setLevel(original)
