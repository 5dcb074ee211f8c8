from churn.sweep import family_overrides


def test_family_grid_becomes_one_override_per_key_with_the_store_stamped():
    args = family_overrides("random_forest", {"n_estimators": [100, 200], "max_depth": [10, None]}, "sqlite:///x")
    assert args == [
        "-S",
        "model.type=random_forest",
        "-S",
        "mlflow.tracking_uri=sqlite:///x",
        "-S",
        "model.random_forest.n_estimators=100,200",
        "-S",
        "model.random_forest.max_depth=10,null",
    ]


def test_logistic_regression_keys_sit_directly_under_model():
    args = family_overrides("logistic_regression", {"C": [0.01, 1.5]}, "u")
    assert "model.C=0.01,1.5" in args
