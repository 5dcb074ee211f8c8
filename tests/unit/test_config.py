"""params.yaml parsing for the stages: the repository's file is valid, it is read as DVC reads it, and every invalid
value is one line naming the file, the dotted key, the value and what was expected. The blocks only tools read
are in test_tool_settings.py."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from churn.config import (
    MODEL_TYPES,
    Params,
    RandomForestParams,
    RegisterParams,
    Threshold,
    load_params,
    parse_params,
    read_yaml,
)
from churn.errors import ChurnError, ParamError
from tests.conftest import REPO, delete_key


def test_repository_params_yaml_parses():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.model.type in MODEL_TYPES
    assert 0 < params.prepare.test_size < 1
    assert params.train.cv_folds >= 2
    assert params.data.features == params.data.numerical + params.data.categorical
    assert params.data.target not in params.data.features
    gate = params.register.thresholds
    assert (gate["roc_auc"].greater_is_better, gate["roc_auc"].value) == (True, 0.70)
    assert (gate["log_loss"].greater_is_better, gate["log_loss"].value) == (False, 0.60)


def test_parse_params_returns_typed_values(params_raw):
    params_raw["model"]["C"] = 2  # an int in YAML is still a float parameter
    params_raw["mlflow"]["tracking_uri"] = None  # null is the default store, like ""
    params_raw["data"]["id_columns"] = None  # null is no columns
    params = parse_params(params_raw)
    assert params.model.C == 2.0
    assert isinstance(params.model.C, float)
    assert params.mlflow.tracking_uri == ""
    assert params.data.id_columns == ()
    assert params.data.numerical == tuple(params_raw["data"]["numerical"])
    assert params.model.random_forest.model_dump() == params_raw["model"]["random_forest"]


def test_hyperparameters_are_the_active_family_as_before(params_raw):
    model = parse_params(params_raw).model
    assert model.hyperparameters() == {"C": model.C, "max_iter": model.max_iter, "class_weight": None}
    for family in ("random_forest", "xgboost"):
        params_raw["model"]["type"] = family
        assert parse_params(params_raw).model.hyperparameters() == params_raw["model"][family]


@pytest.mark.parametrize(
    "block", [None, "data", "model", "model.random_forest", "model.xgboost", "register", "resources"]
)
def test_every_level_is_frozen(params_raw, block):
    node = parse_params(params_raw)
    for part in block.split(".") if block else []:
        node = getattr(node, part)
    name = next(iter(type(node).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(node, name, getattr(node, name))


def test_thresholds_are_frozen(params_raw):
    entry = parse_params(params_raw).register.thresholds["roc_auc"]
    with pytest.raises(ValidationError, match="frozen"):
        entry.min = 1.0


def _set(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.type", "svm"),
        ("model.C", 0),
        ("model.C", -1),
        ("model.C", "0.5"),  # a string is not a number, even one that reads as one
        ("model.C", True),
        ("model.max_iter", 0),
        ("model.max_iter", 100.0),
        ("model.max_iter", True),  # booleans are not integers
        ("model.class_weight", "weighted"),
        ("model.random_forest.max_depth", 0),
        ("model.random_forest.min_samples_split", 1),
        ("model.xgboost.subsample", 0),
        ("model.xgboost.subsample", 1.5),
        ("model.xgboost.colsample_bytree", -0.1),
        ("model.xgboost.learning_rate", 0),
        ("prepare.test_size", 0),
        ("prepare.test_size", 1),
        ("prepare.test_size", 1.5),
        ("prepare.seed", -1),
        ("train.cv_folds", 1),
        ("train.cv_folds", 0),
        ("train.n_jobs", True),
        ("train.calibration", "platt"),
        ("train.calibration", None),
        ("featurize.numeric_impute", "mode"),
        ("featurize.scale", "yes"),
        ("featurize.scale", 1),
        ("featurize.min_category_frequency", 0),
        ("evaluate.threshold", 1),
        ("evaluate.primary_metric", "auc"),
        ("evaluate.bootstrap.resamples", 0),
        ("evaluate.bootstrap.confidence", 1),
        ("evaluate.bootstrap.seed", -1),
        ("register.model_name", ""),
        ("register.min_improvement", -0.1),
        ("mlflow.experiment", None),
        ("mlflow.tracking_uri", 3),
        ("data.numerical", "age"),
        ("data.categorical", ["gender", ""]),
        ("data.target", 3),
        ("data.positive_label", None),
        ("data.positive_label", [1]),
        ("data.positive_label", {"yes": 1}),
        ("model", "logistic_regression"),
        ("data.encoding", "klingon"),
        ("data.encoding", ""),
        ("data.separator", ";;"),
        ("data.separator", '"'),
        ("data.separator", 1),
        ("prepare.drop_duplicates", "yes"),
        ("prepare.warn_share", 2),
        ("prepare.warn_share", -0.1),
    ],
)
def test_invalid_value_names_the_dotted_key(params_raw, key, value):
    _set(params_raw, key, value)
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    message = str(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"params.yaml: {key} must be ")
    assert message.endswith(f", got {value!r}")  # the value seen, so the user knows what to change
    assert "\n" not in message


def test_the_raw_files_encoding_and_separator_are_optional(params_raw):
    del params_raw["data"]["encoding"], params_raw["data"]["separator"]
    data = parse_params(params_raw).data
    assert (data.encoding, data.separator) == ("utf-8", ",")
    params_raw["data"]["separator"] = "\t"
    assert parse_params(params_raw).data.separator == "\t"


def test_unknown_key_is_one_line_listing_the_known_keys(params_raw):
    params_raw["model"]["CC"] = 0.5
    with pytest.raises(ChurnError) as caught:
        parse_params(params_raw)
    assert str(caught.value) == (
        "params.yaml: model.CC is not a known key "
        "(expected one of: type, C, max_iter, class_weight, random_forest, xgboost)"
    )


def test_unknown_model_type_is_one_line(params_raw):
    params_raw["model"]["type"] = "svm"
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    assert str(caught.value) == (
        "params.yaml: model.type must be one of logistic_regression, random_forest, xgboost, got 'svm'"
    )


@pytest.mark.parametrize(
    "dotted",
    ["featurize.scale", "model.random_forest.max_depth", "register.thresholds", "resources.batch_rows"],
)
def test_missing_key_is_named(params_raw, dotted):
    delete_key(params_raw, dotted)
    with pytest.raises(ChurnError, match=f"^params.yaml: missing key {re.escape(dotted)}$"):
        parse_params(params_raw)


@pytest.mark.parametrize("name", ["mlflow", "resources"])
def test_missing_block_is_named(params_raw, name):
    del params_raw[name]
    with pytest.raises(ChurnError, match=f"missing key {name}$"):
        parse_params(params_raw)


@pytest.mark.parametrize(
    ("dotted", "known"),
    [
        ("model.random_forest.max_features", "n_estimators, max_depth"),
        ("shuffle", "resources, generate, sweep, compare, tune"),  # the tools' blocks are known, set aside
        ("register.min_roc_auc", "model_name, thresholds, min_improvement"),  # the old gate's shape
        ("register.thresholds.auc", "accuracy, precision"),
        ("register.thresholds.roc_auc.above", "min, max"),
    ],
)
def test_unknown_keys_are_named(params_raw, dotted, known):
    _set(params_raw, dotted, {"min": 1} if dotted.startswith("register.thresholds") else [1])
    with pytest.raises(
        ChurnError, match=rf"^params\.yaml: {re.escape(dotted)} is not a known key \(expected one of: "
    ) as caught:
        parse_params(params_raw)
    assert known in str(caught.value)


def test_columns_are_declared_once_and_some_are_features(params_raw):
    params_raw["data"]["categorical"].append("age")
    with pytest.raises(
        ParamError, match=r"data\.categorical\[3\] must be a column not already declared in data\.numerical, got 'age'"
    ):
        parse_params(params_raw)
    params_raw["data"]["categorical"].pop()
    params_raw["data"]["target"] = "customer_id"
    with pytest.raises(ParamError, match=r"data\.target must be a column not already declared in data\.id_columns"):
        parse_params(params_raw)
    params_raw["data"].update(target="churn", numerical=[], categorical=None)
    with pytest.raises(ParamError, match=r"data\.numerical must be non-empty"):
        parse_params(params_raw)


@pytest.mark.parametrize(
    ("gate", "key", "words"),
    [
        ({"roc_auc": {"min": 0.7, "max": 0.9}}, "register.thresholds.roc_auc", "{min: <number>} or {max: <number>}"),
        ({"roc_auc": {}}, "register.thresholds.roc_auc", "{min: <number>} or {max: <number>}"),
        ({"roc_auc": {"min": "high"}}, "register.thresholds.roc_auc.min", "a number"),
        ({"log_loss": {"min": 0.1}}, "register.thresholds.log_loss", "{max: <number>} (lower is better)"),
        ({"f1": {"max": 0.9}}, "register.thresholds.f1", "{min: <number>} (greater is better)"),
        ([{"roc_auc": 0.7}], "register.thresholds", "a mapping of test metric"),
    ],
)
def test_bad_gate_names_the_metric(params_raw, gate, key, words):
    params_raw["register"]["thresholds"] = gate
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_gate_is_data_for_mlflow():
    gates = {"brier": {"max": 0.2}, "f1": {"min": 1}}
    register = RegisterParams(
        model_name="m",
        thresholds=gates,
        min_improvement=0,
        allow_other_data=False,
        profile_bins=10,
        card={"intended_use": "u", "limits": []},
    )
    assert register.thresholds["f1"] == Threshold(min=1.0)
    assert [(t.value, t.greater_is_better) for t in register.thresholds.values()] == [(0.2, False), (1.0, True)]
    assert register.model_dump()["thresholds"]["brier"] == {"min": None, "max": 0.2}


def test_models_built_in_code_are_validated_too():
    with pytest.raises(ValidationError):
        RandomForestParams(n_estimators=10, max_depth=None, min_samples_split=1, min_samples_leaf=1)


@pytest.mark.parametrize("raw", [["a", "b"], "just text", 3, None])
def test_non_mapping_is_rejected(raw):
    with pytest.raises(ChurnError, match="expected a mapping"):
        parse_params(raw)


def test_non_mapping_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- data\n- model\n")
    with pytest.raises(ChurnError) as caught:
        load_params(path)
    assert str(path) in str(caught.value)
    assert "mapping" in str(caught.value)


@pytest.mark.parametrize("text", ["data: [unclosed\n", "data: 1\ndata: 2\n", "a: b: c\n"])
def test_invalid_yaml_is_one_line_naming_the_file(tmp_path, text):
    broken = tmp_path / "params.yaml"
    broken.write_text(text)
    with pytest.raises(ChurnError, match="not valid YAML") as caught:
        load_params(broken)
    assert str(caught.value).startswith(f"{broken}: ")
    assert "\n" not in str(caught.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ChurnError, match=r"absent\.yaml: not found"):
        load_params(tmp_path / "absent.yaml")


# --- YAML as DVC reads it --------------------------------------------------------------------------------------

EDGE_CASES = """\
yes_: yes
no_: no
on_: on
off_: off
Yes_: Yes
NO_: NO
y_: y
true_: true
True_: True
null_: null
tilde: ~
empty:
sci: 1e3
sci_float: 1.0e3
sci_negative: 1e-3
octal: 0o10
octal_old: 010
hex: 0x1F
binary: 0b101
sexagesimal: 1:30
underscore: 1_000
plus: +5
dot: .5
trailing_dot: 1.
inf: .inf
minus_inf: -.Inf
date: 2024-01-02
quoted: "yes"
list: [yes, no, on, 1e3, 0o10]
nested: {label: off, rate: 5e-1}
"""


def test_yaml_is_read_exactly_as_dvc_reads_params(tmp_path):
    from dvc.utils.serialize import load_yaml

    path = tmp_path / "params.yaml"
    path.write_text(EDGE_CASES)
    ours, dvc = read_yaml(path), load_yaml(path)
    assert ours == dvc
    assert [type(v) for v in ours.values()] == [type(v) for v in dvc.values()]
    # YAML 1.2, not PyYAML's 1.1: these are strings and numbers, not booleans and text
    assert (ours["yes_"], ours["off_"], ours["sci"], ours["octal"]) == ("yes", "off", 1000.0, 8)


def test_positive_label_yes_stays_the_string_yes(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("positive_label: 1", "positive_label: yes")
    assert "positive_label: yes" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).data.positive_label == "yes"
