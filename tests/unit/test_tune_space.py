"""The tune block of params.yaml: search spaces, their validation, the trial -> params mapping, the sampler."""

from __future__ import annotations

import re

import optuna
import pytest

from churn.errors import ChurnError
from churn.params import parse_params
from churn.tune import (
    apply_command,
    param_key,
    parse_tune,
    resolve_storage,
    seeded_tpe,
    trial_model,
)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def settings_of(raw: dict, **overrides):
    return parse_tune(raw, parse_params(raw), **overrides)


def error_of(raw: dict, **overrides) -> str:
    with pytest.raises(ChurnError) as caught:
        settings_of(raw, **overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_repository_tune_block_parses_with_the_seed_ranges(params_raw, root):
    settings = settings_of(params_raw)
    assert settings.family == params_raw["model"]["type"]
    assert settings.study_name == f"churn-{settings.family}-roc_auc"
    assert settings.direction == "maximize"
    assert settings.storage == f"sqlite:///{root / 'optuna.db'}"
    spaces = {
        family: {d.key: (d.low, d.high, d.log, d.integer) for d in settings_of(params_raw, family=family).space}
        for family in ("logistic_regression", "random_forest", "xgboost")
    }
    assert spaces["logistic_regression"] == {"model.C": (0.001, 100.0, True, False)}
    assert spaces["random_forest"] == {
        "model.random_forest.n_estimators": (50, 500, False, True),
        "model.random_forest.max_depth": (3, 20, False, True),
        "model.random_forest.min_samples_split": (2, 20, False, True),
    }
    assert spaces["xgboost"]["model.xgboost.learning_rate"] == (0.001, 0.3, True, False)
    assert spaces["xgboost"]["model.xgboost.max_depth"] == (3, 10, False, True)


def test_overrides_and_lower_is_better_metrics(params_raw, root):
    params_raw["tune"]["metric"] = "log_loss"
    settings = settings_of(params_raw, n_trials=3, family="xgboost", study_name="mine", timeout_s=60)
    assert (settings.n_trials, settings.family, settings.study_name, settings.timeout_s) == (3, "xgboost", "mine", 60)
    assert settings.direction == "minimize"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "sqlite:///{root}/optuna.db"),
        ("sqlite:///studies/x.db", "sqlite:///{root}/studies/x.db"),
        ("sqlite:////elsewhere/x.db", "sqlite:////elsewhere/x.db"),
        ("postgresql+psycopg2://u:p@db:5432/optuna", "postgresql+psycopg2://u:p@db:5432/optuna"),
    ],
)
def test_storage_is_absolute_against_the_repository_root(root, url, expected):
    assert resolve_storage(url) == expected.format(root=root)


@pytest.mark.parametrize(
    ("space", "key", "words"),
    [
        ({"gamma": {"low": 1, "high": 2}}, "tune.space.logistic_regression.gamma", "unknown key"),
        ({"C": {"low": 1, "high": 1}}, "tune.space.logistic_regression.C", "empty range"),
        ({"C": {"low": 100, "high": 0.001, "log": True}}, "tune.space.logistic_regression.C", "inverted range"),
        ({"C": {"low": 0, "high": 1}}, "tune.space.logistic_regression.C.low", "model.C"),
        ({"C": {"low": -1, "high": 1, "log": True}}, "tune.space.logistic_regression.C.low", "log scale"),
        ({"C": {"low": 0.1, "hgh": 1}}, "tune.space.logistic_regression.C.hgh", "absent"),
        ({"C": {"low": 0.1}}, "tune.space.logistic_regression.C", "both low and high"),
        ({"C": {"low": "a", "high": 1}}, "tune.space.logistic_regression.C", "numbers"),
        ({"C": 0.5}, "tune.space.logistic_regression.C", "mapping"),
        ({"C": {"low": 0.1, "high": 1, "type": "int"}}, "tune.space.logistic_regression.C.type", "float"),
        ({"max_iter": {"low": 10.5, "high": 100}}, "tune.space.logistic_regression.max_iter", "integers"),
        ({"class_weight": {"choices": ["balanced", "weighted"]}}, "choices[1]", "model.class_weight"),
        ({"class_weight": {"choices": []}}, "tune.space.logistic_regression.class_weight.choices", "non-empty"),
        ({}, "tune.space.logistic_regression", "mapping"),
    ],
)
def test_bad_logistic_regression_space_names_the_key(params_raw, root, space, key, words):
    params_raw["tune"]["space"]["logistic_regression"] = space
    message = error_of(params_raw, family="logistic_regression")
    assert key in message
    assert words in message


def test_random_forest_bound_outside_the_model_domain(params_raw, root):
    params_raw["tune"]["space"]["random_forest"]["min_samples_split"] = {"low": 1, "high": 20}
    message = error_of(params_raw, family="random_forest")
    assert "tune.space.random_forest.min_samples_split.low" in message
    assert ">= 2" in message


def test_unknown_family_in_space_and_in_family(params_raw, root):
    params_raw["tune"]["space"]["svm"] = {"C": {"low": 1, "high": 2}}
    assert "tune.space.svm" in error_of(params_raw)
    del params_raw["tune"]["space"]["svm"]
    params_raw["tune"]["family"] = "svm"
    assert re.search(r"tune\.family must be .*, got 'svm'", error_of(params_raw))


def test_family_without_a_space(params_raw, root):
    del params_raw["tune"]["space"]["xgboost"]
    assert "missing key tune.space.xgboost" in error_of(params_raw, family="xgboost")
    settings_of(params_raw, family="random_forest")  # the others still parse


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("metric", "auc", "tune.metric"),
        ("n_trials", -1, "tune.n_trials"),
        ("timeout_s", 0, "tune.timeout_s"),
        ("storage", "", "tune.storage"),
        ("shuffle", True, "tune.shuffle"),
    ],
)
def test_bad_tune_settings_name_the_key(params_raw, root, key, value, named):
    params_raw["tune"][key] = value
    assert named in error_of(params_raw)


def test_missing_tune_block(params_raw, root):
    del params_raw["tune"]
    assert "missing key tune" in error_of(params_raw)


def test_a_trial_sets_the_params_keys_the_train_stage_reads(params_raw):
    model = parse_params(params_raw).model
    lr = trial_model(model, "logistic_regression", {"C": 0.25})
    assert (lr.type, lr.C, lr.max_iter) == ("logistic_regression", 0.25, model.max_iter)
    rf = trial_model(model, "random_forest", {"max_depth": 7})
    assert rf.type == "random_forest"
    assert rf.random_forest == {**model.random_forest, "max_depth": 7}
    assert rf.hyperparameters()["max_depth"] == 7
    assert param_key("random_forest", "max_depth") == "model.random_forest.max_depth"
    assert param_key("logistic_regression", "C") == "model.C"


def test_dimensions_suggest_the_declared_types(params_raw, root):
    params_raw["tune"]["space"]["logistic_regression"]["class_weight"] = {"choices": [None, "balanced"]}
    lr = settings_of(params_raw, family="logistic_regression").space
    trial = optuna.trial.FixedTrial({"model.C": 0.5, "model.class_weight": "balanced"})
    assert [d.suggest(trial) for d in lr] == [0.5, "balanced"]
    rf = settings_of(params_raw, family="random_forest").space
    fixed = optuna.trial.FixedTrial({d.key: d.low + 1 for d in rf})
    values = [d.suggest(fixed) for d in rf]
    assert values == [51, 4, 3]
    assert all(isinstance(v, int) for v in values)


def test_apply_command_round_trips_values():
    record = {"params": {"model.type": "logistic_regression", "model.C": 0.1 + 0.2, "model.class_weight": None}}
    overrides = apply_command(record)[apply_command(record).index("run") + 1 :]
    assert overrides == [
        "-S",
        "model.type=logistic_regression",
        "-S",
        "model.C=0.30000000000000004",
        "-S",
        "model.class_weight=null",
    ]


def _run(study: optuna.Study, trials: int) -> None:
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=trials)


def test_sampler_is_seeded_per_trial():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    one_go = optuna.create_study(sampler=seeded_tpe(3))
    _run(one_go, 14)
    # A study continued by a new process (a new sampler with the same seed) proposes what one run would:
    continued = optuna.create_study(sampler=seeded_tpe(3))
    _run(continued, 4)
    continued.sampler = seeded_tpe(3)
    _run(continued, 10)
    xs = [t.params["x"] for t in one_go.trials]
    assert xs == [t.params["x"] for t in continued.trials]
    assert len(set(xs)) == len(xs)  # no repeated start-up proposals


def test_missing_featurize_outputs_say_to_run_the_pipeline(params_raw, tmp_path, monkeypatch):
    from churn.tune import load_inputs

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChurnError, match=r"^data/prepared/train\.parquet: not found; .*run `make run` first$"):
        load_inputs(parse_params(params_raw))
