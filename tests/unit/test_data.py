"""Reading and cleaning the raw table: types, missing values, and errors that name the file, column and row."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.config import DataParams
from churn.core.schema import clean_table
from churn.errors import DataError
from churn.storage.csv_reader import read_raw

SOURCE = "data/raw/tiny.csv"


@pytest.fixture
def schema() -> DataParams:
    return DataParams(
        raw_path=SOURCE,
        id_columns=("customer_id",),
        numerical=("age", "charges"),
        categorical=("plan", "senior"),
        target="churn",
        positive_label=1,
    )


@pytest.fixture
def raw() -> pd.DataFrame:
    """Eight customers as read_raw returns them: every value is text."""
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(1, 9)],
            "age": ["30", "41", "52", "23", "35", "60", "44", "29"],
            "charges": ["20.5", "", "  ", "70.25", "NA", "99", "10", "15"],
            "plan": ["basic", "pro", "basic", " pro ", "", "basic", "pro", "basic"],
            "senior": ["0", "1", "0", "0", "1", "0", "1", "0"],
            "churn": ["1", "0", "0", "1", "0", "1", "0", "0"],
        }
    )


def test_blank_numeric_becomes_nan(raw, schema):
    clean = clean_table(raw, schema, SOURCE)[0]
    assert clean["charges"].dtype == "float64"
    assert clean["charges"].isna().tolist() == [False, True, True, False, True, False, False, False]
    assert clean["charges"].iloc[3] == 70.25
    assert clean["age"].tolist() == [30.0, 41.0, 52.0, 23.0, 35.0, 60.0, 44.0, 29.0]


def test_clean_does_not_mutate_its_argument(raw, schema):
    before = raw.copy()
    clean_table(raw, schema, SOURCE)[0]
    pd.testing.assert_frame_equal(raw, before)


def test_text_in_numeric_column_names_file_column_value_and_row(raw, schema):
    bad = raw.assign(age=["30", "41", "52", "forty", "35", "60", "44", "29"])
    with pytest.raises(DataError) as caught:
        clean_table(bad, schema, SOURCE)[0]
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    assert "'age'" in message
    assert "'forty'" in message
    assert "data row 4" in message


def test_row_number_counts_rows_of_the_file_even_after_unlabeled_rows(raw, schema):
    bad = raw.assign(
        churn=["1", "", "0", "1", "0", "1", "0", "0"],  # data row 2 has no label and is dropped
        age=["30", "41", "52", "forty", "35", "60", "44", "29"],  # the bad value is on data row 4 of the file
    )
    with pytest.raises(DataError, match=r"at data row 4$"):
        clean_table(bad, schema, SOURCE)[0]


def test_one_class_target_raises(raw, schema):
    with pytest.raises(DataError, match="'churn' has one class") as caught:
        clean_table(raw.assign(churn="0"), schema, SOURCE)[0]
    assert str(caught.value).startswith(SOURCE)


def test_more_than_two_classes_raises(raw, schema):
    with pytest.raises(DataError, match="must be binary"):
        clean_table(raw.assign(churn=["1", "0", "2", "1", "0", "1", "0", "0"]), schema, SOURCE)[0]


def test_positive_label_absent_raises(raw, schema):
    yes_no = DataParams(**{**schema.__dict__, "positive_label": "Yes"})
    with pytest.raises(DataError, match=r"data\.positive_label 'Yes'") as caught:
        clean_table(raw, yes_no, SOURCE)[0]
    assert str(caught.value).startswith(SOURCE)


def test_yes_no_target_maps_to_one_and_zero(raw, schema):
    yes_no = DataParams(**{**schema.__dict__, "positive_label": "Yes"})
    labels = ["Yes", "No", "No", "Yes", " No", "Yes ", "No", "No"]
    clean = clean_table(raw.assign(churn=labels), yes_no, SOURCE)[0]
    assert clean["churn"].dtype == "int64"
    assert clean["churn"].tolist() == [1, 0, 0, 1, 0, 1, 0, 0]


def test_categorical_zero_one_stays_text(raw, schema):
    clean = clean_table(raw, schema, SOURCE)[0]
    assert clean["senior"].tolist() == ["0", "1", "0", "0", "1", "0", "1", "0"]
    assert all(isinstance(v, str) for v in clean["senior"])


def test_categorical_is_stripped_and_blank_is_missing(raw, schema):
    clean = clean_table(raw, schema, SOURCE)[0]
    assert clean["plan"].iloc[3] == "pro"
    assert pd.isna(clean["plan"].iloc[4])
    assert clean["customer_id"].tolist() == raw["customer_id"].tolist()


def test_rows_with_empty_target_are_dropped(raw, schema):
    clean = clean_table(raw.assign(churn=["1", "", "0", " ", "0", "1", "0", "0"]), schema, SOURCE)[0]
    assert clean["customer_id"].tolist() == ["C1", "C3", "C5", "C6", "C7", "C8"]
    assert clean.index.tolist() == list(range(6))


def test_target_empty_everywhere_raises(raw, schema):
    with pytest.raises(DataError, match="empty in every row"):
        clean_table(raw.assign(churn=""), schema, SOURCE)[0]


# --- read_raw ------------------------------------------------------------------------------------

HEADER = "customer_id,age,charges,plan,senior,churn,unused\n"


def _csv(tmp_path, text: str):
    path = tmp_path / "tiny.csv"
    path.write_text(text)
    return path


def test_read_raw_reads_declared_columns_as_text(tmp_path, schema):
    path = _csv(tmp_path, HEADER + "C1,30,20.5,basic,0,1,x\nC2,41,,pro,1,0,y\nC3,52,NA,basic,0,0,z\n")
    frame = read_raw(path, schema)
    assert list(frame.columns) == ["customer_id", "age", "charges", "plan", "senior", "churn"]
    assert frame["charges"].tolist() == ["20.5", "", "NA"]  # text: validate_and_clean decides what is missing
    assert frame["senior"].tolist() == ["0", "1", "0"]
    clean = clean_table(frame, schema, str(path))[0]
    assert clean["charges"].isna().tolist() == [False, True, True]
    assert clean["senior"].tolist() == ["0", "1", "0"]


def test_read_raw_missing_column_names_path_and_column(tmp_path, schema):
    path = _csv(tmp_path, "customer_id,age,plan,senior,churn\nC1,30,basic,0,1\n")
    with pytest.raises(DataError) as caught:
        read_raw(path, schema)
    assert str(caught.value).startswith(f"{path}: ")
    assert "'charges'" in str(caught.value)


def test_read_raw_empty_file_names_path(tmp_path, schema):
    path = _csv(tmp_path, "")
    assert path.stat().st_size == 0
    with pytest.raises(DataError, match="empty") as caught:
        read_raw(path, schema)
    assert caught.value.path == str(path)


def test_read_raw_header_only_names_path(tmp_path, schema):
    path = _csv(tmp_path, HEADER)
    with pytest.raises(DataError, match="no data rows") as caught:
        read_raw(path, schema)
    assert caught.value.path == str(path)


def test_read_raw_missing_file_names_path(tmp_path, schema):
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match="not found") as caught:
        read_raw(path, schema)
    assert caught.value.path == str(path)


def _bytes(tmp_path, data: bytes):
    path = tmp_path / "tiny.csv"
    path.write_bytes(data)
    return path


def _error(path, schema) -> str:
    with pytest.raises(DataError) as caught:
        read_raw(path, schema)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_a_byte_of_another_encoding_names_line_column_and_the_key(tmp_path, schema):
    path = _bytes(tmp_path, HEADER.encode() + b"C1,30,20.5,basic,0,1,x\nC2,41,,pr\xe9,1,0,y\n")
    message = _error(path, schema)
    assert "line 3, column 'plan': byte 0xe9 is not valid utf-8" in message
    assert "set data.encoding" in message and "latin-1" in message
    latin = read_raw(path, schema.model_copy(update={"encoding": "latin-1"}))
    assert latin["plan"].tolist() == ["basic", "pr\u00e9"]


def test_a_byte_of_another_encoding_in_the_header(tmp_path, schema):
    path = _bytes(tmp_path, HEADER.replace("unused", "\u00e9t\u00e9").encode("latin-1") + b"C1,30,20.5,basic,0,1,x\n")
    assert "line 1 (the header): byte 0xe9 is not valid utf-8" in _error(path, schema)


def test_another_separator_is_named_with_the_key_that_fixes_it(tmp_path, schema):
    path = _csv(tmp_path, HEADER.replace(",", ";") + "C1;30;20,5;basic;0;1;x\n")
    message = _error(path, schema)
    assert 'looks ";"-separated' in message and 'set data.separator: ";"' in message
    frame = read_raw(path, schema.model_copy(update={"separator": ";"}))
    assert frame["charges"].tolist() == ["20,5"]


def test_a_repeated_column_is_refused(tmp_path, schema):
    path = _csv(tmp_path, HEADER.replace("unused", "age") + "C1,30,20.5,basic,0,1,31\n")
    assert "column 'age' appears 2 times in the header (fields [2, 7])" in _error(path, schema)


def test_a_ragged_row_names_its_line(tmp_path, schema):
    path = _csv(tmp_path, HEADER + "C1,30,20.5,basic,0,1,x\nC2,41,1,pro,1,0,y,extra\n")
    assert "line 3: 8 fields where the header has 7" in _error(path, schema)


def test_an_unclosed_quote_names_its_line(tmp_path, schema):
    path = _csv(tmp_path, HEADER + 'C1,30,20.5,"basic,0,1,x\nC2,41,1,pro,1,0,y\n')
    assert "line 2: " in (message := _error(path, schema)) and "unclosed quote" in message


def test_spaces_around_a_column_name_are_pointed_out(tmp_path, schema):
    path = _csv(tmp_path, HEADER.replace("age", " age") + "C1,30,20.5,basic,0,1,x\n")
    assert "missing column 'age' declared in params.yaml data block (the header has ' age'" in _error(path, schema)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path, schema):
    path = _bytes(tmp_path, b"\xef\xbb\xbf" + (HEADER + "C1,30,20.5,basic,0,1,x\n").encode())
    assert read_raw(path, schema)["customer_id"].tolist() == ["C1"]
