"""The preprocessor: output columns map back to raw columns, unseen categories, fitting on train only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from churn.config import DataParams, FeaturizeParams
from churn.core.features import build_preprocessor, raw_feature_importance, raw_feature_of_outputs, transform


@pytest.fixture
def schema() -> DataParams:
    # "plan" is a prefix of "plan_type": output "cat__plan_type_annual" must map to plan_type, not plan.
    return DataParams(
        raw_path="tiny.csv",
        id_columns=("customer_id",),
        numerical=("age", "charges"),
        categorical=("plan", "plan_type"),
        target="churn",
        positive_label=1,
    )


@pytest.fixture
def settings() -> FeaturizeParams:
    return FeaturizeParams(numeric_impute="median", scale=True, min_category_frequency=1)


@pytest.fixture
def train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(10)],
            "age": [20.0, 30.0, 40.0, 50.0, 60.0, 25.0, 35.0, 45.0, 55.0, 65.0],
            "charges": [10.0, np.nan, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
            "plan": ["basic", "pro", "basic", "pro", "basic", "pro", "basic", "basic", "pro", "pro"],
            "plan_type": ["monthly", "annual"] * 5,
            "churn": [1, 0, 0, 1, 0, 1, 0, 0, 1, 0],
        }
    )


@pytest.fixture
def holdout() -> pd.DataFrame:
    """Far from the train rows (so train-only fitting is visible), with categories the train split lacks."""
    return pd.DataFrame(
        {
            "customer_id": ["T1", "T2", "T3"],
            "age": [1000.0, 2000.0, 3000.0],
            "charges": [5000.0, 6000.0, np.nan],
            "plan": ["basic", "enterprise", "pro"],
            "plan_type": ["monthly", "annual", "weekly"],
            "churn": [0, 1, 0],
        }
    )


def test_every_output_maps_to_its_raw_column(schema, settings, train):
    pre = build_preprocessor(schema, settings).fit(train)
    pairs = dict(zip(pre.get_feature_names_out(), raw_feature_of_outputs(pre), strict=True))
    assert pairs == {
        "num__age": "age",
        "num__charges": "charges",
        "cat__plan_basic": "plan",
        "cat__plan_pro": "plan",
        "cat__plan_type_annual": "plan_type",
        "cat__plan_type_monthly": "plan_type",
    }


def test_prefix_named_column_declared_first(schema, settings, train):
    # The longer name first: a greedy prefix match would now claim "plan_*" outputs for plan_type.
    swapped = DataParams(**{**schema.__dict__, "categorical": ("plan_type", "plan")})
    pre = build_preprocessor(swapped, settings).fit(train)
    owners = raw_feature_of_outputs(pre)
    assert owners == ["age", "charges", "plan_type", "plan_type", "plan", "plan"]


def test_infrequent_categories_map_to_their_column(schema, train):
    rare = FeaturizeParams(numeric_impute="mean", scale=False, min_category_frequency=6)
    pre = build_preprocessor(schema, rare).fit(train)
    names = list(pre.get_feature_names_out())
    assert "cat__plan_infrequent_sklearn" in names  # both plans occur 5 times: below 6, so pooled
    owners = raw_feature_of_outputs(pre)
    assert owners[names.index("cat__plan_infrequent_sklearn")] == "plan"
    assert set(owners) == {"age", "charges", "plan", "plan_type"}


@pytest.mark.parametrize("model", [LogisticRegression(max_iter=500), RandomForestClassifier(n_estimators=5)])
def test_raw_feature_importance_sums_to_one(schema, settings, train, model):
    pre = build_preprocessor(schema, settings).fit(train)
    model = model.set_params(random_state=0).fit(transform(pre, train).to_numpy(), train["churn"])
    importance = raw_feature_importance(pre, model)
    assert set(importance.index) == {"age", "charges", "plan", "plan_type"}
    assert importance.sum() == pytest.approx(1.0)
    assert (importance >= 0).all()
    assert importance.is_monotonic_decreasing


def test_raw_feature_importance_sums_the_encoded_columns(schema, settings, train):
    pre = build_preprocessor(schema, settings).fit(train)

    class Fixed:  # coefficients in output order: age, charges, plan x2, plan_type x2
        coef_ = np.array([[1.0, -1.0, 0.5, -1.5, 0.0, 4.0]])

    importance = raw_feature_importance(pre, Fixed())
    assert importance.to_dict() == pytest.approx({"plan_type": 0.5, "plan": 0.25, "age": 0.125, "charges": 0.125})


def test_unseen_category_at_transform_time(schema, settings, train, holdout):
    pre = build_preprocessor(schema, settings).fit(train)
    out = transform(pre, holdout)
    assert out.shape == (3, 6)
    assert not out.isna().any().any()
    # "enterprise" and "weekly" were never seen: no plan column (resp. plan_type column) is set.
    assert out.loc[1, ["cat__plan_basic", "cat__plan_pro"]].tolist() == [0.0, 0.0]
    assert out.loc[2, ["cat__plan_type_annual", "cat__plan_type_monthly"]].tolist() == [0.0, 0.0]
    assert out.loc[0, ["cat__plan_basic", "cat__plan_pro"]].tolist() == [1.0, 0.0]


def test_fitted_on_train_only(schema, settings, train, holdout):
    pre = build_preprocessor(schema, settings).fit(train)
    scaler = pre.named_transformers_["num"].named_steps["scale"]
    imputed = train[["age", "charges"]].fillna(train[["age", "charges"]].median())
    np.testing.assert_allclose(scaler.mean_, imputed.mean().to_numpy())
    imputer = pre.named_transformers_["num"].named_steps["impute"]
    np.testing.assert_allclose(imputer.statistics_, train[["age", "charges"]].median().to_numpy())
    # The holdout's missing charge is filled with the train median, then scaled with train statistics.
    out = transform(pre, holdout)
    expected = (train["charges"].median() - scaler.mean_[1]) / scaler.scale_[1]
    assert out.loc[2, "num__charges"] == pytest.approx(expected)
    assert transform(pre, train)[["num__age", "num__charges"]].mean().abs().max() < 1e-9


def test_no_scaling_when_disabled(schema, train):
    pre = build_preprocessor(schema, FeaturizeParams(numeric_impute="mean", scale=False, min_category_frequency=1)).fit(
        train
    )
    out = transform(pre, train)
    assert out["num__age"].tolist() == train["age"].tolist()
    assert out.loc[1, "num__charges"] == pytest.approx(train["charges"].mean())


def test_id_and_target_columns_are_not_features(schema, settings, train):
    pre = build_preprocessor(schema, settings).fit(train)
    same = transform(pre, train.assign(customer_id="X", churn=1 - train["churn"]))
    pd.testing.assert_frame_equal(same, transform(pre, train))


def test_blank_category_is_imputed_as_missing(schema, settings, train):
    from churn.core.schema import clean_table

    as_text = train.astype(str).assign(plan=["basic", " ", *train["plan"].tolist()[2:]], charges="1")
    clean = clean_table(as_text, schema, "tiny.csv")[0]
    assert pd.isna(clean.loc[1, "plan"])
    pre = build_preprocessor(schema, settings).fit(clean)
    out = transform(pre, clean)
    assert out.loc[1, "cat__plan_missing"] == 1.0


def test_numeric_column_empty_in_train_still_maps_outputs(schema, settings, train):
    empty = train.assign(charges=np.nan)
    pre = build_preprocessor(schema, settings).fit(empty)
    owners = raw_feature_of_outputs(pre)
    assert len(owners) == len(pre.get_feature_names_out())
    model = LogisticRegression().fit(transform(pre, empty).to_numpy(), empty["churn"])
    assert raw_feature_importance(pre, model).sum() == pytest.approx(1.0)
