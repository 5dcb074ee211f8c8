"""The blocks of params.yaml only tools read (generate, sweep, compare, tune: churn.tools.settings): the stages'
model sets them aside unread, and each tool's own model validates its block with the same one-line errors.
The tune block's search spaces are in test_tune_space.py."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from churn.config import TOOL_BLOCKS, Params, parse_params
from churn.errors import ChurnError, ParamError
from churn.tools.settings import (
    CompareSettings,
    GenerateSettings,
    SweepSettings,
    TuneSettings,
    compare_settings,
    drift_settings,
    generate_settings,
    load,
    sweep_settings,
    tune_settings,
)
from tests.conftest import REPO, delete_key


def read(raw: dict, block: str):
    """The tool's view of `block`, as the tool that reads it validates it."""
    if block == "tune":
        return tune_settings(raw, parse_params(raw).model)
    readers = {"generate": generate_settings, "sweep": sweep_settings, "compare": compare_settings}
    return {**readers, "drift": drift_settings}[block](raw)


def _set(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


def test_the_stage_model_holds_only_what_stages_read(params_raw):
    params = parse_params(params_raw)
    assert set(Params.model_fields).isdisjoint(TOOL_BLOCKS)
    assert set(TOOL_BLOCKS) <= set(params_raw)  # the repository's file has them all
    assert not [block for block in TOOL_BLOCKS if hasattr(params, block)]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tune.space.logistic_regression.C", {"low": 100, "high": 0.001}),
        ("tune.n_trials", 0),
        ("tune", "everything"),
        ("sweep.svm", [1]),
        ("compare.sort_by", "auc"),
        ("generate.rows", 9),
        ("drift.warn_psi", 0),
        ("drift.fail_psi", 0.05),  # below warn_psi
    ],
)
def test_a_bad_tool_block_fails_the_tool_only(params_raw, key, value):
    _set(params_raw, key, value)
    assert isinstance(parse_params(params_raw), Params)  # every stage still runs
    block = key.split(".")[0]
    with pytest.raises(ChurnError) as caught:
        read(params_raw, block)
    message = str(caught.value)
    assert message.startswith(f"params.yaml: {key} ")
    assert "\n" not in message


@pytest.mark.parametrize("block", TOOL_BLOCKS)
def test_tool_blocks_are_optional_for_the_stages_and_named_by_their_tool(params_raw, block):
    del params_raw[block]
    parse_params(params_raw)
    with pytest.raises(ChurnError, match=f"^params.yaml: missing key {block}$"):
        read(params_raw, block)


def test_the_repository_blocks_parse(params_raw):
    params, raw = load(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert isinstance(read(raw, "generate"), GenerateSettings)
    assert isinstance(read(raw, "compare"), CompareSettings)
    assert isinstance(read(raw, "tune"), TuneSettings)
    sweep = read(raw, "sweep")
    assert isinstance(sweep, SweepSettings)
    assert sweep.random_forest == {k: tuple(v) for k, v in params_raw["sweep"]["random_forest"].items()}
    assert sweep.grids()["logistic_regression"] == {"C": params_raw["sweep"]["logistic_regression"]["C"]}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("generate.rows", 9),
        ("generate.seed", -1),
        ("compare.sort_by", "auc"),
        ("compare.curves", 0),
        ("tune.n_trials", 0),
        ("tune.timeout_s", 0),
        ("tune.storage", ""),
        ("tune.study_name", "  "),
        ("tune.metric", "auc"),
        ("tune.family", "svm"),
        ("tune.pruner.n_warmup_steps", -1),
    ],
)
def test_invalid_value_names_the_dotted_key(params_raw, key, value):
    _set(params_raw, key, value)
    with pytest.raises(ParamError) as caught:
        read(params_raw, key.split(".")[0])
    message = str(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"params.yaml: {key} must be ")
    assert message.endswith(f", got {value!r}")
    assert "\n" not in message


@pytest.mark.parametrize("dotted", ["tune.pruner.n_startup_trials", "tune.best_params", "compare.curves"])
def test_missing_key_is_named(params_raw, dotted):
    delete_key(params_raw, dotted)
    with pytest.raises(ChurnError, match=f"^params.yaml: missing key {re.escape(dotted)}$"):
        read(params_raw, dotted.split(".")[0])


@pytest.mark.parametrize(
    ("dotted", "known"),
    [
        ("tune.shuffle", "family, metric"),
        ("sweep.svm", "logistic_regression, random_forest, xgboost"),
        ("sweep.xgboost.gamma", "n_estimators, max_depth, learning_rate"),
        ("generate.size", "rows, seed"),
    ],
)
def test_unknown_keys_are_named(params_raw, dotted, known):
    _set(params_raw, dotted, [1])
    with pytest.raises(ChurnError, match=rf"^params\.yaml: {re.escape(dotted)} is not a known key \(expected one of: "):
        read(params_raw, dotted.split(".")[0])
    parse_params(params_raw)


@pytest.mark.parametrize(("grid", "words"), [([], "a non-empty list"), (7, "a non-empty list"), ({}, "non-empty")])
def test_sweep_grids_are_non_empty_lists(params_raw, grid, words):
    if isinstance(grid, dict):
        params_raw["sweep"]["xgboost"] = grid
    else:
        params_raw["sweep"]["xgboost"]["max_depth"] = grid
    with pytest.raises(ParamError, match=r"^params\.yaml: sweep\.xgboost") as caught:
        read(params_raw, "sweep")
    assert words in str(caught.value)


@pytest.mark.parametrize("block", ["generate", "compare", "sweep", "tune", "tune.space", "tune.pruner"])
def test_every_level_is_frozen(params_raw, block):
    head, *rest = block.split(".")
    node = read(params_raw, head)
    for part in rest:
        node = getattr(node, part)
    name = next(iter(type(node).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(node, name, getattr(node, name))
    entry = read(params_raw, "tune").space.logistic_regression["C"]
    with pytest.raises(ValidationError, match="frozen"):
        entry.low = 1.0
