"""The data-block proposal (churn.tools.datablock): each column's role, the target and its label, and the
rewrite of params.yaml's data block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from churn.config import DataParams
from churn.core.schema import clean_table
from churn.errors import ChurnError, DataError
from churn.tools.datablock import label_value, main, propose, raw_path_for, read_table, rewrite_data_block
from tests.conftest import REPO

WORDS = ("late", "bill", "called", "twice", "about", "the", "router", "happy", "slow", "price", "moving", "away")


@pytest.fixture
def table() -> pd.DataFrame:
    """200 customers as the file's text: an integer id, free-text notes, blank numbers, a 0/1 numeric
    column, a plan, and a 0/1 target with 1 the minority."""
    rng = np.random.default_rng(3)
    rows = 200
    charges = rng.uniform(10, 120, rows).round(2).astype(str).astype(object)
    charges[[3, 17, 60]] = ["", "NA", " "]
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(1001, 1001 + rows)],
            "notes": [" ".join(rng.choice(WORDS, 5)) + f" #{i}" for i in range(rows)],
            "charges": charges,
            "senior": rng.choice(["0", "1"], rows).astype(object),
            "plan": rng.choice(["basic", "pro", "family"], rows).astype(object),
            "churn": np.where(rng.uniform(size=rows) < 0.3, "1", "0").astype(object),
        }
    )


def roles(proposal) -> dict[str, str]:
    return {d.column: d.role for d in proposal.decisions}


def test_generated_table_gets_each_role(table):
    proposal = propose(table)
    assert roles(proposal) == {
        "id": "id_columns",
        "notes": "ignored",
        "charges": "numerical",
        "senior": "numerical",  # a 0/1 column is a number unless it is the target
        "plan": "categorical",
        "churn": "target",
    }
    why = {d.column: d.why for d in proposal.decisions}
    assert why["notes"].startswith("free text")
    assert "3 blanks" in why["charges"]
    assert proposal.block("data/raw/t.csv") == {
        "raw_path": "data/raw/t.csv",
        "id_columns": ["id"],
        "numerical": ["charges", "senior"],
        "categorical": ["plan"],
        "target": "churn",
        "positive_label": 1,
        "encoding": "utf-8",
        "separator": ",",
    }


def test_proposed_block_cleans_the_table_as_prepare_does(table):
    data = DataParams(**propose(table).block("data/raw/t.csv"))
    clean = clean_table(table, data, "t.csv")[0]
    assert clean["charges"].isna().sum() == 3
    assert clean["churn"].sum() == (table["churn"] == "1").sum()


def test_yes_no_target_positive_label_is_the_minority_yes():
    frame = pd.DataFrame(
        {
            "customerID": [f"{i:04d}-AB" for i in range(10)],
            "tenure": ["1", "5", "", "7", "2", "40", "3", "8", "60", "12"],
            "Contract": ["Month", "Year", "Month", "Month", "Year", "Year", "Month", "Month", "Year", "Month"],
            "Churn": ["Yes", "No", "Yes", "No", "No", "No", "Yes", "No", "No", "No"],
        }
    )
    proposal = propose(frame)
    assert roles(proposal)["customerID"] == "id_columns"
    assert proposal.positive_label == "Yes"
    data = DataParams(**proposal.block("data/raw/t.csv"))
    assert clean_table(frame, data, "t.csv")[0]["Churn"].tolist() == [1, 0, 1, 0, 0, 0, 1, 0, 0, 0]


def test_minority_decides_even_when_it_is_no():
    frame = pd.DataFrame({"x": ["1.5", "2", "2", "4", "9"], "target": ["Yes", "Yes", "No", "Yes", "Yes"]})
    assert propose(frame).positive_label == "No"


@pytest.mark.parametrize("text", ["1", "0", "-2", "Yes", "yes", "true", "1.0", "01", "null", "No churn"])
def test_written_label_reads_back_as_the_file_text(text, tmp_path):
    block = {**_block(), "positive_label": label_value(text)}
    written = rewrite_data_block((REPO / "params.yaml").read_text(), block)
    label = YAML(typ="safe").load(written)["data"]["positive_label"]  # as DVC and churn.config read it
    assert str(label) == text  # what core.schema compares with the target's cells


def test_target_by_option_and_its_errors(table):
    assert propose(table.rename(columns={"churn": "left"}), target="left").target == "left"
    with pytest.raises(DataError, match="--target"):
        propose(table.rename(columns={"churn": "left"}))
    with pytest.raises(DataError, match="several columns could be the target"):
        propose(table.assign(label=table["churn"]))
    with pytest.raises(DataError, match="'plan' must have two values, found 3"):
        propose(table, target="plan")
    with pytest.raises(DataError, match="no column 'nope'"):
        propose(table, target="nope")


def test_ids_by_uniqueness_and_name():
    rows = 30
    frame = pd.DataFrame(
        {
            "row": [str(i) for i in range(rows)],  # numbers the rows
            "account_id": [str(i * 7 + 3) for i in range(rows)],  # unique integers named like an id
            "balance": [str(i * 7 + 3) for i in range(rows)],  # the same integers, neither named nor numbered
            "email": [f"user{i}@example.com" for i in range(rows)],  # unique single words
            "paid": ["yes", "no", "yes"] * 10,  # ends in "id", not an id
            "empty": [""] * rows,
            "country": ["FR"] * rows,
            "churned": ["0", "1", "0"] * 10,
        }
    )
    found = roles(propose(frame))
    assert found == {
        "row": "id_columns",
        "account_id": "id_columns",
        "balance": "numerical",
        "email": "id_columns",
        "paid": "categorical",
        "empty": "ignored",
        "country": "ignored",
        "churned": "target",
    }


def test_text_in_a_mostly_numeric_column_makes_it_categorical():
    frame = pd.DataFrame({"size": ["1", "2", "large", "3"] * 3, "churn": ["0", "1", "0"] * 4})
    decision = propose(frame).decisions[0]
    assert (decision.role, decision.why) == ("categorical", "text, 4 values (not numbers: 'large')")


def test_no_feature_left_is_an_error():
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "churn": ["0", "1", "0", "1"]})
    with pytest.raises(DataError, match="no feature columns"):
        propose(frame)


def test_semicolon_file_is_read_with_its_separator(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id;plan;churn\n1;basic;0\n2;pro;1\n")
    assert read_table(path).to_dict("list") == {"id": ["1", "2"], "plan": ["basic", "pro"], "churn": ["0", "1"]}


def test_block_carries_the_separator_and_encoding(table, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = table.assign(plan=table["plan"].replace("pro", "pr\u00f6")).to_csv(index=False, sep=";")
    (tmp_path / "t.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(SystemExit):
        main(["t.csv"])
    assert "not utf-8 text; pass --encoding" in capsys.readouterr().err
    main(["t.csv", "--encoding", "latin-1"])
    out = capsys.readouterr().out
    assert '  encoding: latin-1\n  separator: ";"\n' in out
    assert "pr\u00f6" not in out  # the plan is a category; its values are not in the block


def test_read_table_keeps_text_and_blanks(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,charges,churn\n007,,1\n008,NA,0\n")
    frame = read_table(path)
    assert frame.to_dict("list") == {"id": ["007", "008"], "charges": ["", "NA"], "churn": ["1", "0"]}


def _block(**changes) -> dict:
    return {
        "raw_path": "data/raw/telco.csv",
        "id_columns": ["customerID"],
        "numerical": ["SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"],
        "categorical": [f"service_{i}" for i in range(12)],  # too long for one line: one per line
        "target": "Churn",
        "positive_label": "Yes",
        **changes,
    }


SLICED = ["contract_type", "payment_method"]  # params.yaml's evaluate.slices


def test_rewrite_changes_only_the_data_block():
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines()
    block = _block(categorical=[*_block()["categorical"], *SLICED])  # still declares the sliced columns
    written = rewrite_data_block(text, block)
    assert YAML(typ="safe").load(written)["data"] == block
    start = lines.index("data:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" "))
    new = written.splitlines()
    new_end = next(i for i in range(start + 1, len(new)) if new[i] and not new[i].startswith(" "))
    assert new[:start] == lines[:start]
    assert new[new_end - 1 :] == lines[end - 1 :]  # the blank line and every later line, comments included
    assert new[start + 1] == lines[start + 1]  # the block's own comment
    assert '  positive_label: "Yes"' in new


def test_rewrite_drops_the_slices_the_new_block_does_not_declare():
    text = (REPO / "params.yaml").read_text()
    written = rewrite_data_block(text, _block(categorical=["contract_type", "plan"]))
    assert YAML(typ="safe").load(written)["evaluate"]["slices"] == ["contract_type"]
    changed = [line for line in written.splitlines() if line not in text.splitlines()]
    assert "  slices: [contract_type]" in changed
    assert [line for line in changed if not line.startswith("    ") and ":" in line] == [
        "  raw_path: data/raw/telco.csv",
        "  id_columns: [customerID]",
        "  numerical: [SeniorCitizen, tenure, MonthlyCharges, TotalCharges]",
        "  categorical: [contract_type, plan]",
        "  target: Churn",
        '  positive_label: "Yes"',
        "  slices: [contract_type]",  # the one line changed outside the data block
    ]


def test_rewrite_with_the_same_block_is_byte_identical():
    text = (REPO / "params.yaml").read_text()
    current = YAML(typ="safe").load(text)["data"]
    assert rewrite_data_block(text, current) == text


def test_rewrite_rejects_an_invalid_block():
    text = (REPO / "params.yaml").read_text()
    with pytest.raises(ChurnError, match=r"data.categorical\[0\] must be a column not already declared"):
        rewrite_data_block(text, _block(categorical=["tenure"]))


def test_raw_path_is_under_data_raw(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    assert raw_path_for(tmp_path / "data" / "raw" / "t.csv", tmp_path).as_posix() == "data/raw/t.csv"
    assert raw_path_for(tmp_path / "elsewhere" / "t.csv", tmp_path).as_posix() == "data/raw/t.csv"
    assert raw_path_for(tmp_path.parent / "t.csv", tmp_path).as_posix() == "data/raw/t.csv"


def test_command_without_write_prints_the_block_and_changes_nothing(table, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    table.to_csv(tmp_path / "t.csv", index=False)
    main(["t.csv"])
    out = capsys.readouterr().out
    assert "  notes" in out and "free text" in out
    assert "data:\n  raw_path: data/raw/t.csv\n  id_columns: [id]\n" in out
    assert "  positive_label: 1\n" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_command_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["t.csv"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: t.csv: no column named churn/") and "--target" in err[0]
