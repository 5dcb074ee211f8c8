"""Two versions of the raw data through a real `dvc repro`: version 2 is version 1 plus appended customers
(`python -m churn.tools.generate` with more rows: the generator's prefix property), tracked with `dvc add`.
Every version-1 customer stays on its side of the split, so models trained on either version are compared on
test rows neither of them saw."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.integration.helpers import DVC, PYTHON, make_repo, reproduce, run

pytestmark = pytest.mark.slow

RAW = "data/raw/customers.csv"


def _sides(root) -> dict[str, set[str]]:
    return {
        side: set(pd.read_parquet(root / f"data/prepared/{side}.parquet")["customer_id"]) for side in ("train", "test")
    }


def test_appended_rows_move_no_earlier_customer_to_the_other_side(tmp_path):
    root = make_repo(tmp_path / "repo", rows=300)
    reproduce(root)
    first, raw_first = _sides(root), (root / RAW).read_text()
    assert len(first["train"]) + len(first["test"]) == 300

    run([PYTHON, "-m", "churn.tools.generate", "--rows", "450"], root)
    assert (root / RAW).read_text().startswith(raw_first)  # version 2 = version 1 + 150 appended rows
    run([*DVC, "add", "-q", RAW], root)
    run(["git", "commit", "-q", "-am", "data: version 2"], root)
    run([*DVC, "repro"], root)
    second = _sides(root)

    assert len(second["train"]) + len(second["test"]) == 450
    assert first["test"] <= second["test"]  # every version-1 test customer is still in test
    assert first["train"] <= second["train"]  # and every train customer in train
    assert len(second["test"]) > len(first["test"])  # the new customers are split too
    quality = json.loads((root / "reports" / "data_quality.json").read_text())
    assert quality["rows_test"] == len(second["test"]) and quality["test_rows_in_train"] == 0
    assert set(quality["class_shares"]) == {"train", "test"}
