"""The train/test split (churn.core.split): a row's side follows from its ids alone, so appended rows move no
earlier row, the batch size changes nothing, test rows identical to a train row are counted the same way at
every size, and a side with under 2 rows or one class is a one-line DataError naming the file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import load_params
from churn.core import quality
from churn.core.generate import generate
from churn.core.schema import CleanBatches, clean_table
from churn.core.split import Sides, identity, in_test, row_keys
from churn.core.streaming import SeenKeys
from churn.errors import DataError
from churn.storage.csv_reader import iter_raw
from tests.conftest import REPO

SOURCE = "data/raw/customers.csv"


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def _data(params, **changes):
    return params.data.model_copy(update={"raw_path": SOURCE, **changes})


def _split(frame: pd.DataFrame, data, settings) -> tuple[Sides, pd.DataFrame, pd.DataFrame]:
    sides = Sides(data, settings, SOURCE)
    train, test = sides.split(clean_table(frame, data, SOURCE)[0])
    return sides, train, test


def test_keys_follow_the_row_and_the_seed_not_the_batch(params):
    clean = clean_table(generate(500, 5).astype(str), params.data, SOURCE)[0]
    keys = row_keys(clean[["customer_id"]], seed=42)
    batched = np.concatenate([row_keys(clean[["customer_id"]].iloc[i : i + 13], seed=42) for i in range(0, 500, 13)])
    np.testing.assert_array_equal(keys, batched)
    assert not np.array_equal(keys, row_keys(clean[["customer_id"]], seed=43))
    assert 0.15 < in_test(keys, 0.2).mean() < 0.25
    assert not in_test(keys, 0.0).any() and in_test(keys, 1.0).all()


def _side_of(key: list[str], train: pd.DataFrame, test: pd.DataFrame) -> dict[tuple, str]:
    """Each row's side, by its `key` columns (as text)."""
    sides = (("train", train), ("test", test))
    return {tuple(row): side for side, part in sides for row in part[key].astype(str).itertuples(index=False)}


@pytest.mark.parametrize("ids", [("customer_id",), ()], ids=["id columns", "whole row"])
def test_appending_rows_keeps_every_earlier_rows_side(params, ids):
    data = _data(params, id_columns=ids)
    first = generate(600, 3).astype(str)
    # Version 2: version 1 plus 400 new customers (the generator's prefix property), in another row order.
    second = generate(1000, 3).astype(str).sample(frac=1.0, random_state=1).reset_index(drop=True)
    key = ["customer_id"] if ids else identity(data)
    _, train1, test1 = _split(first, data, params.prepare)
    _, train2, test2 = _split(second, data, params.prepare)
    before, after = _side_of(key, train1, test1), _side_of(key, train2, test2)
    assert len(before) == 600 and len(after) == 1000
    assert [row for row, side in before.items() if after[row] != side] == []
    assert 60 < len(test1) < 180 and len(test2) > len(test1)  # test_size 0.2, up to binomial noise


def _csv(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False, float_format="%.2f")
    return path


def _batch_split(path, data, settings, batch_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """What prepare does with the batches (churn.pipeline.prepare), repeats kept."""
    cleaner, seen, sides = CleanBatches(data, str(path)), SeenKeys(), Sides(data, settings, str(path))
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "test": []}
    duplicates = 0
    for raw in iter_raw(path, data, batch_rows):
        clean = cleaner.clean(raw)
        keys = row_keys(clean[identity(data)], settings.seed)
        duplicates += int((~seen.first_seen(keys)).sum())
        for side, part in zip(("train", "test"), sides.split(clean, keys), strict=True):
            parts[side].append(part)
    sides.check(cleaner.finish())
    counted = sides.rows, sides.positives, sides.test_rows_in_train()
    report = quality.report(cleaner.rows, cleaner.unlabeled, duplicates, 0, *counted, cleaner.labels())
    return pd.concat(parts["train"], ignore_index=True), pd.concat(parts["test"], ignore_index=True), report


def test_batches_of_7_and_of_1_000_000_rows_give_the_same_split_and_report(tmp_path, params):
    table = generate(300, 11).astype(str)
    repeats = table.head(60).assign(customer_id=[f"R{i}" for i in range(60)])  # same rows under new ids
    path = _csv(tmp_path, pd.concat([table, repeats], ignore_index=True))
    data = params.data.model_copy(update={"raw_path": str(path)})
    settings = params.prepare.model_copy(update={"drop_duplicates": False})
    small = _batch_split(path, data, settings, 7)
    train, test, report = _batch_split(path, data, settings, 1_000_000)
    pd.testing.assert_frame_equal(small[0], train)
    pd.testing.assert_frame_equal(small[1], test)
    assert small[2] == report and report["rows_duplicate"] == 60
    # test_rows_in_train is measured, and is what a plain comparison of the two sides finds.
    columns = identity(data)
    seen = test.merge(train[columns].drop_duplicates(), on=columns, how="inner")
    assert small[2]["test_rows_in_train"] == len(seen) > 0
    shares = small[2]["class_shares"]
    assert shares["test"]["1"] == round(test["churn"].mean(), 6) and shares["train"]["1"] == round(
        train["churn"].mean(), 6
    )


def test_test_rows_in_train_counts_each_repeat_across_batches(params):
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(40)],
            **{c: ["1"] * 40 for c in params.data.numerical},
            **{c: ["a"] * 40 for c in params.data.categorical},
            "churn": [str(i % 2) for i in range(40)],
        }
    )
    frame.loc[frame.index >= 4, "age"] = [str(20 + i) for i in range(36)]  # rows 0-3: two pairs of equal rows
    clean = clean_table(frame, params.data, SOURCE)[0]
    sides = Sides(params.data, params.prepare, SOURCE)
    parts = [sides.split(clean.iloc[[i]]) for i in range(40)]  # batches of one row
    train, test = (pd.concat(side, ignore_index=True) for side in zip(*parts, strict=True))
    columns = identity(params.data)
    expected = len(test.merge(train[columns], on=columns, how="inner"))
    assert sides.test_rows_in_train() == expected


def test_a_side_without_two_rows_is_one_line_naming_the_file(params):
    frame = generate(10, 2).astype(str)
    settings = params.prepare.model_copy(update={"test_size": 0.001})
    sides, _, test = _split(frame, _data(params), settings)
    assert len(test) == 0
    with pytest.raises(DataError) as caught:
        sides.check(("0", "1"))
    assert str(caught.value) == (
        f"{SOURCE}: the test split got 0 of the 10 rows (prepare.test_size 0.001); each side needs 2 or more: "
        "add rows, or change prepare.test_size or prepare.seed"
    )


def test_a_side_with_one_class_is_one_line_naming_the_file(params):
    frame = generate(60, 4).astype(str).assign(churn="No")
    to_test = in_test(row_keys(frame[["customer_id"]], params.prepare.seed), params.prepare.test_size)
    frame.loc[np.flatnonzero(~to_test)[:5], "churn"] = "Yes"  # every Yes lands in train
    data = _data(params, positive_label="Yes")
    sides, train, test = _split(frame, data, params.prepare)
    assert train["churn"].sum() == 5 and len(test) >= 2 and test["churn"].sum() == 0
    with pytest.raises(DataError) as caught:
        sides.check(("No", "Yes"))
    assert str(caught.value) == (
        f"{SOURCE}: all {len(test)} rows of the test split have churn 'No'; each side needs both classes: "
        "add rows, or change prepare.test_size or prepare.seed"
    )
