"""Batch scoring's edges without a model: cleaning raw rows, file formats, column checks; and the verdict
of `churn.tools.reproduce`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from churn.config import parse_params
from churn.errors import ChurnError, DataError
from churn.tools.predict import (
    check_columns,
    clean_features,
    output_columns,
    read_table,
    score,
    scoring_of,
    spelled,
    write_table,
)
from churn.tools.reproduce import largest_difference

NUMERICAL = ["age", "total_charges"]
CATEGORICAL = ["gender", "contract_type"]


@pytest.fixture
def text_rows() -> pd.DataFrame:
    """Rows as a CSV gives them when read as text: padding, blanks, an unseen category."""
    return pd.DataFrame(
        {
            "customer_id": ["007", "008", "009"],
            "age": ["42", " 58 ", ""],
            "total_charges": ["1944.39", "", "NA"],
            "gender": ["Female", " Male ", ""],
            "contract_type": ["Two year", "Weekly", "Month-to-month"],
        }
    )


def test_clean_features_types_numbers_and_categories_like_prepare(text_rows):
    clean = clean_features(text_rows, NUMERICAL, CATEGORICAL, "in.csv")
    assert list(clean.columns) == NUMERICAL + CATEGORICAL
    assert clean["age"].dtype == "float64"
    assert clean["age"].iloc[:2].tolist() == [42.0, 58.0]
    assert np.isnan(clean["age"].iloc[2]) and clean["total_charges"].isna().tolist() == [False, True, True]
    # None (not NaN) for a blank category: the fitted imputer fills None
    assert clean["gender"].tolist() == ["Female", "Male", None]
    assert clean["contract_type"].tolist() == ["Two year", "Weekly", "Month-to-month"]
    assert text_rows["age"].tolist() == ["42", " 58 ", ""]  # the input is not changed


def test_clean_features_keeps_typed_columns_from_parquet():
    typed = pd.DataFrame(
        {"age": [42, 58], "total_charges": [1.5, np.nan], "gender": ["F", None], "contract_type": ["a", "b"]}
    )
    clean = clean_features(typed, NUMERICAL, CATEGORICAL, "in.parquet")
    assert clean["age"].tolist() == [42.0, 58.0]
    assert clean["gender"].tolist() == ["F", None]


def test_text_in_a_number_column_names_file_column_and_row(text_rows):
    bad = text_rows.assign(age=["42", "old", "1"])
    with pytest.raises(DataError, match=r"in\.csv: column 'age' must be numeric, found 'old' at data row 2"):
        clean_features(bad, NUMERICAL, CATEGORICAL, "in.csv")


def test_missing_column_is_named_with_the_file():
    frame = pd.DataFrame({"age": [1]})
    with pytest.raises(DataError, match=r"^in\.csv: missing column 'tenure' \(and 1 more\) required by the model"):
        check_columns(frame, ["age", "tenure", "gender"], "in.csv", "the model")
    check_columns(frame, ["age"], "in.csv", "the model")


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_tables_round_trip_and_leave_no_temporary_file(tmp_path, name):
    frame = pd.DataFrame({"customer_id": ["007", "C2"], "churn_probability": [0.123456789012345678, 0.5]})
    write_table(frame, tmp_path / name)
    back = read_table(tmp_path / name)
    assert back["customer_id"].tolist() == ["007", "C2"]  # ids keep leading zeros
    assert float(back["churn_probability"].iloc[0]) == frame["churn_probability"].iloc[0]
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_unsupported_suffix_and_missing_file_are_one_line(tmp_path):
    with pytest.raises(ChurnError, match=r"out\.xlsx: unsupported file type '\.xlsx'; expected \.csv or \.parquet"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.xlsx")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "absent.csv")


def test_a_file_without_rows_is_one_line(tmp_path):
    (tmp_path / "header.csv").write_text("customer_id,age\n")
    (tmp_path / "empty.csv").write_text("")
    pd.DataFrame({"age": pd.Series([], dtype="float64")}).to_parquet(tmp_path / "empty.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="no data rows below the header"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(DataError, match="file is empty"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no rows to score"):
        read_table(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"cannot read as parquet \("):
        read_table(tmp_path / "broken.parquet")


def test_a_csv_is_read_with_the_data_blocks_encoding_and_separator(tmp_path):
    (tmp_path / "in.csv").write_bytes("customer_id;city\n007;Z\u00fcrich\n".encode("latin-1"))
    with pytest.raises(DataError, match='looks ";"-separated'):
        read_table(tmp_path / "in.csv")
    with pytest.raises(DataError, match="line 2, column 'city': byte 0xfc is not valid utf-8"):
        read_table(tmp_path / "in.csv", "utf-8", ";")
    assert read_table(tmp_path / "in.csv", "latin-1", ";")["city"].tolist() == ["Z\u00fcrich"]


class FakeModel:
    """A pyfunc model's surface: metadata, and predict giving [p_negative, p_positive] per row."""

    def __init__(self, metadata: dict | None) -> None:
        self.metadata = SimpleNamespace(metadata=metadata, get_input_schema=lambda: None)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        positive = features["age"].to_numpy() / 100
        return np.column_stack([1 - positive, positive])


def test_labels_are_spelled_as_the_table_spells_them():
    assert spelled(["0", "1"]) == (0, 1)
    assert spelled(["No", "Yes"]) == ("No", "Yes")
    assert spelled(["good", "bad"]) == ("good", "bad")
    assert spelled(["0.0", "1.0"]) == ("0.0", "1.0")


def test_scores_carry_the_models_labels_and_threshold(params_raw):
    params = parse_params(params_raw)
    metadata = {"numerical": ["age"], "categorical": [], "target": "Churn", "labels": ["No", "Yes"], "threshold": 0.3}
    model = FakeModel(metadata)
    scoring = scoring_of(model, params)
    assert (scoring.target, scoring.labels, scoring.threshold) == ("Churn", ("No", "Yes"), 0.3)
    features = pd.DataFrame({"age": [10.0, 30.0, 90.0]})
    scored = score(features, pd.DataFrame({"id": ["a", "b", "c"]}), model, scoring)
    assert scored.columns.tolist() == ["id", "Churn_probability", "Churn_label"]
    assert scored["Churn_label"].tolist() == ["No", "Yes", "Yes"]
    assert scoring_of(model, params, threshold=0.5).threshold == 0.5


def test_a_model_without_label_metadata_scores_1_and_0(params_raw):
    params = parse_params(params_raw)
    scoring = scoring_of(FakeModel({"numerical": ["age"], "categorical": []}), params)
    assert (scoring.target, scoring.labels, scoring.threshold) == ("churn", (0, 1), params.evaluate.threshold)


def test_output_columns_follow_the_target():
    assert output_columns("churn") == ("churn_probability", "churn_label")
    assert output_columns("Churn") == ("Churn_probability", "Churn_label")


def test_largest_difference_is_zero_only_for_bitwise_equal_scores():
    a = np.array([0.1, 0.2, np.nan])
    assert largest_difference(a, a.copy()) == (0.0, -1)
    b = a.copy()
    b[1] = np.nextafter(0.2, 1)  # one unit in the last place is still a difference
    difference, row = largest_difference(a, b)
    assert row == 1 and 0 < difference < 1e-15
    c = a.copy()
    c[2] = 0.3
    assert largest_difference(a, c) == (np.inf, 2)


def test_largest_difference_refuses_different_lengths():
    with pytest.raises(ChurnError, match="scored"):
        largest_difference(np.zeros(3), np.zeros(4))
