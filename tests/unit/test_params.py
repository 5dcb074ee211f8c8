"""params.yaml parsing: the repository's file is valid, and every invalid value names its dotted key."""

from __future__ import annotations

import re

import pytest

from churn.errors import ChurnError, ParamError
from churn.params import MODEL_TYPES, Params, load_params, parse_params
from tests.conftest import REPO


def test_repository_params_yaml_parses():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.model.type in MODEL_TYPES
    assert 0 < params.prepare.test_size < 1
    assert params.train.cv_folds >= 2
    assert params.data.features == params.data.numerical + params.data.categorical
    assert params.data.target not in params.data.features


def test_parse_params_returns_typed_values(params_raw):
    params_raw["model"]["C"] = 2  # an int in YAML is still a float parameter
    params = parse_params(params_raw)
    assert params.model.C == 2.0
    assert isinstance(params.model.C, float)
    assert params.data.id_columns == tuple(params_raw["data"]["id_columns"])
    assert params.model.random_forest == params_raw["model"]["random_forest"]


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
        ("prepare.test_size", 0),
        ("prepare.test_size", 1),
        ("prepare.test_size", 1.5),
        ("train.cv_folds", 1),
        ("train.cv_folds", 0),
    ],
)
def test_invalid_value_names_the_dotted_key(params_raw, key, value):
    _set(params_raw, key, value)
    with pytest.raises(ParamError) as caught:
        parse_params(params_raw)
    assert caught.value.key == key
    assert key in str(caught.value)
    assert repr(value) in str(caught.value)  # the value seen, so the user knows what to change


@pytest.mark.parametrize("dotted", ["featurize.scale", "model.random_forest.max_depth", "register.min_roc_auc"])
def test_missing_key_is_named(params_raw, dotted):
    *parents, last = dotted.split(".")
    block = params_raw
    for part in parents:
        block = block[part]
    del block[last]
    with pytest.raises(ChurnError, match=f"missing key {re.escape(dotted)}$"):
        parse_params(params_raw)


def test_missing_block_is_named(params_raw):
    del params_raw["mlflow"]
    with pytest.raises(ChurnError, match=r"missing key mlflow$"):
        parse_params(params_raw)


def test_unknown_key_inside_random_forest_is_named(params_raw):
    params_raw["model"]["random_forest"]["max_features"] = "sqrt"
    with pytest.raises(ChurnError, match=r"model\.random_forest\.max_features"):
        parse_params(params_raw)


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


def test_invalid_yaml_and_missing_file_name_the_file(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ChurnError, match="not valid YAML") as caught:
        load_params(broken)
    assert str(broken) in str(caught.value)
    with pytest.raises(ChurnError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_error_is_one_line(params_raw):
    params_raw["model"]["type"] = "svm"
    with pytest.raises(ChurnError) as caught:
        parse_params(params_raw)
    assert "\n" not in str(caught.value)
