"""docs/own-data.md end to end: the Telco file, the data-block command with --write, the printed
`git add` line, the pipeline, then every DVC command a collaborator runs.

The project starts as a clone that never pulled the bundled sample (its pointer in git, its file in no cache):
the state in which a switch that left the sample's pointer behind broke `dvc status` and `dvc checkout`.
The Telco file is read from ../shared and committed only to the temporary repository.
"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from churn.config import load_params
from tests.integration.helpers import DVC, PYTHON, make_repo, reproduce, run

pytestmark = pytest.mark.slow


def test_telco_through_the_data_block_command_leaves_dvc_healthy(tmp_path, telco):
    root = make_repo(tmp_path / "repo", rows=200)
    shutil.rmtree(root / ".dvc" / "cache")  # a clone that never pulled the sample
    (root / "data" / "raw" / "customers.csv").unlink()
    (root / "data" / "raw" / "telco.csv").write_bytes(telco.read_bytes())

    out = run([PYTHON, "-m", "churn.tools.datablock", "data/raw/telco.csv", "--write"], root).stdout
    assert "  customerID" in out and "Churn" in out
    git_add = next(line for line in out.splitlines() if line.startswith("next: git add ")).split("&&")[0]
    run(shlex.split(git_add.removeprefix("next: ")), root)
    run(["git", "commit", "-q", "-m", "data: telco"], root)
    assert run(["git", "status", "--porcelain"], root).stdout == ""  # the printed line staged everything
    assert not (root / "data" / "raw" / "customers.csv.dvc").exists()

    data = load_params(root / "params.yaml").data
    assert data.raw_path == "data/raw/telco.csv"
    assert data.id_columns == ("customerID",)
    assert data.target == "Churn" and data.positive_label == "Yes"
    assert {"tenure", "MonthlyCharges", "TotalCharges"} <= set(data.numerical)
    assert {"Contract", "PaymentMethod", "InternetService"} <= set(data.categorical)

    reproduce(root)
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.80

    assert "up to date" in run([*DVC, "status"], root).stdout
    run([*DVC, "push"], root)
    assert "in sync" in run([*DVC, "status", "--cloud"], root).stdout
    shutil.rmtree(root / ".dvc" / "cache")
    (root / "data" / "raw" / "telco.csv").unlink()
    run([*DVC, "pull"], root)
    run([*DVC, "checkout"], root)
    assert (root / "data" / "raw" / "telco.csv").read_bytes() == telco.read_bytes()
    assert "up to date" in run([*DVC, "status"], root).stdout
    run([PYTHON, "-m", "churn.tools.rawdata"], root)  # `make data` after the switch
