"""Drift against a training profile: PSI per column, unseen values flagged per row, a profile made in any
batches, a missing profiled column as one line; the direction test (tenure + 24 months drifts tenure only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churn.core.drift import drift, make_profile, psi
from churn.core.generate import generate
from churn.errors import DataError

NUMERICAL = ["age", "tenure", "monthly_charges", "total_charges"]
CATEGORICAL = ["gender", "contract_type", "payment_method"]


@pytest.fixture(scope="module")
def train():
    return generate(20_000, seed=42)


@pytest.fixture(scope="module")
def profile(train):
    return make_profile(lambda: [train], NUMERICAL, CATEGORICAL, bins=10)


@pytest.fixture(scope="module")
def batch():
    return generate(5_000, seed=7)


def test_the_profile_is_small_and_the_same_in_any_batches(train, profile):
    batches = make_profile(
        lambda: (train.iloc[i : i + 3_000] for i in range(0, len(train), 3_000)), NUMERICAL, CATEGORICAL, bins=10
    )
    assert batches == profile
    assert len(json.dumps(profile)) < 4_000  # travels in the model's metadata
    tenure = profile["numerical"]["tenure"]
    assert (tenure["min"], tenure["max"]) == (0.0, 72.0)
    assert len(tenure["shares"]) == len(tenure["edges"]) + 2  # the bins, then missing
    assert sum(tenure["shares"]) == pytest.approx(1.0, abs=1e-5)
    assert profile["numerical"]["total_charges"]["shares"][-1] == pytest.approx(297 / 20_000, abs=1e-6)
    assert sum(profile["categorical"]["contract_type"].values()) == pytest.approx(1.0, abs=1e-5)


def test_another_sample_of_the_same_population_does_not_drift(profile, batch):
    report, unseen = drift(profile, batch, "batch.csv")
    assert report["rows"] == len(batch)
    assert all(column["psi"] < 0.02 for column in report["columns"].values()), report
    assert report["unseen_rows"] == int(unseen.sum()) <= 5


def test_direction_tenure_plus_24_months_drifts_tenure_and_no_other_column(profile, batch):
    shifted = batch.assign(tenure=batch["tenure"] + 24)
    report, unseen = drift(profile, shifted, "batch.csv")
    drifted = {name for name, column in report["columns"].items() if column["psi"] > 0.1}
    assert drifted == {"tenure"}
    assert report["columns"]["tenure"]["psi"] > 0.25
    assert report["columns"]["tenure"]["unseen"] == int((shifted["tenure"] > 72).sum()) > 0
    assert unseen.tolist() == (shifted["tenure"] > 72).tolist()


def test_unseen_category_is_flagged_per_row_and_counted(profile, batch):
    changed = batch.assign(payment_method=np.where(np.arange(len(batch)) < 10, "Crypto", batch["payment_method"]))
    report, unseen = drift(profile, changed, "batch.csv")
    assert report["columns"]["payment_method"]["unseen"] == 10
    assert unseen[:10].all() and report["unseen_rows"] >= 10


def test_a_missing_profiled_column_is_one_line(profile, batch):
    with pytest.raises(DataError) as caught:
        drift(profile, batch.drop(columns=["tenure"]), "batch.csv")
    assert str(caught.value) == "batch.csv: missing column 'tenure' of the model's training profile (drift reference)"


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])
    assert np.isfinite(psi([1.0, 0.0], [0.0, 1.0]))  # an empty bin counts with a floor
