"""train.calibration: isotonic calibration runs through train, evaluate and register on 400 generated customers
(the calibrated model pickles, reports its ECE and loads back from the registry in skops' format)."""

from __future__ import annotations

import json

import pytest
from sklearn.calibration import CalibratedClassifierCV

from churn.config import load_params
from churn.pipeline import evaluate, featurize, prepare, register, train
from churn.storage.outputs import read_pickle
from tests.conftest import write_params

pytestmark = pytest.mark.slow  # a pipeline run with a registration


def test_isotonic_calibration_is_trained_evaluated_and_registered(workspace, params_raw):
    params_raw["train"]["calibration"] = "isotonic"
    write_params(workspace, params_raw)
    params = load_params()
    for module in (prepare, featurize, train, evaluate, register):
        module.run(params)
    model = read_pickle(workspace / "models" / "model.pkl")
    assert isinstance(model, CalibratedClassifierCV) and model.method == "isotonic"
    assert len(model.calibrated_classifiers_) == params_raw["train"]["cv_folds"]
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["ece"] < 0.5
    importance = json.loads((workspace / "reports" / "feature_importance.json").read_text())
    assert sum(importance.values()) == pytest.approx(1.0, abs=1e-5)
    decision = json.loads((workspace / "reports" / "register.json").read_text())
    assert decision["passed"] and decision["serving"]["passed"], decision  # skops loads the calibrated model
