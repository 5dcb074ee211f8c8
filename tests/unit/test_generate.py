"""The synthetic sample: deterministic, prefix-stable, and shaped like the data the pipeline expects."""

from __future__ import annotations

import pandas as pd
import pytest

import churn.core.generate as generate_module
from churn.core.generate import COLUMNS, generate


@pytest.fixture(scope="module")
def bundled_size():
    """The bundled sample's size (20,000 rows, seed 42): big enough for rates to be stable."""
    return generate(20_000, seed=42)


def test_same_seed_same_frame():
    pd.testing.assert_frame_equal(generate(50, seed=3), generate(50, seed=3))


def test_other_seed_other_frame():
    assert not generate(50, seed=3).equals(generate(50, seed=4))


@pytest.mark.parametrize(("small", "large"), [(1, 10), (17, 50), (50, 300)])
def test_smaller_sample_is_prefix_of_larger(small, large):
    pd.testing.assert_frame_equal(generate(small, seed=11), generate(large, seed=11).head(small))


def test_ids_of_smaller_sample_are_prefix_of_larger():
    assert generate(17, seed=11)["customer_id"].tolist() == generate(50, seed=11)["customer_id"].head(17).tolist()


def test_whole_blocks_are_prefix_of_larger_sample(monkeypatch):
    # Shrink the block so that block boundaries are crossed on a few dozen rows instead of 100,000.
    monkeypatch.setattr(generate_module, "BLOCK_ROWS", 10)
    large = generate(35, seed=5)
    assert large["customer_id"].tolist()[9:11] == ["C00000010", "C00000011"]
    for small in (10, 20, 30):
        pd.testing.assert_frame_equal(generate(small, seed=5), large.head(small))


@pytest.mark.parametrize("small", [9, 11, 25])
def test_partial_blocks_are_prefix_of_larger_sample(monkeypatch, small):
    monkeypatch.setattr(generate_module, "BLOCK_ROWS", 10)
    pd.testing.assert_frame_equal(generate(small, seed=5), generate(35, seed=5).head(small))


def test_columns_as_declared(bundled_size):
    assert tuple(bundled_size.columns) == COLUMNS
    assert len(bundled_size) == 20_000


def test_customer_ids_are_unique(bundled_size):
    assert bundled_size["customer_id"].is_unique


def test_churn_rate_is_believable(bundled_size):
    assert set(bundled_size["churn"].unique()) == {0, 1}
    assert 0.20 <= bundled_size["churn"].mean() <= 0.32


def test_total_charges_missing_exactly_for_new_customers(bundled_size):
    new = bundled_size["tenure"] == 0
    assert new.sum() > 0  # the property below is only meaningful if brand-new customers exist
    assert bundled_size["total_charges"].isna().equals(new)


def test_values_in_range(bundled_size):
    assert bundled_size["age"].between(18, 85).all()
    assert bundled_size["tenure"].between(0, 72).all()
    assert bundled_size["monthly_charges"].between(18.25, 120.0).all()
    assert set(bundled_size["contract_type"]) == {"Month-to-month", "One year", "Two year"}


def test_longer_contracts_churn_less(bundled_size):
    rate = bundled_size.groupby("contract_type")["churn"].mean()
    assert rate["Month-to-month"] > rate["One year"] > rate["Two year"]
