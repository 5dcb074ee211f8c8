"""The IBM Telco file through the whole pipeline by params alone (no code change).

Telco differs from the bundled sample: `customerID`, a Yes/No target, blank TotalCharges for new customers,
and SeniorCitizen as 0/1 among Yes/No columns. The file is read from ../shared, never committed.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import DVC, PYTHON, make_repo, mlflow_runs, run

pytestmark = pytest.mark.slow

TELCO_DATA = {
    "raw_path": "data/raw/telco.csv",
    "id_columns": ["customerID"],
    "numerical": ["tenure", "MonthlyCharges", "TotalCharges"],
    "categorical": [
        "gender",
        "SeniorCitizen",
        "Partner",
        "Dependents",
        "PhoneService",
        "MultipleLines",
        "InternetService",
        "OnlineSecurity",
        "OnlineBackup",
        "DeviceProtection",
        "TechSupport",
        "StreamingTV",
        "StreamingMovies",
        "Contract",
        "PaperlessBilling",
        "PaymentMethod",
    ],
    "target": "Churn",
    "positive_label": "Yes",
}


def test_telco_by_params_alone_reaches_roc_auc_above_080(tmp_path, telco):
    slices = {"slices": ["Contract", "PaymentMethod"]}  # evaluate.slices names declared columns
    root = make_repo(tmp_path / "repo", params={"data": TELCO_DATA, "evaluate": slices}, raw=telco)
    src_before = run(["git", "ls-files", "-s", "src"], root).stdout
    run([PYTHON, "-m", "churn.tools.store", "init"], root)
    run([*DVC, "repro"], root)

    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.80
    slices = json.loads((root / "reports" / "slices.json").read_text())
    assert sum(row["rows"] for row in slices["Contract"].values()) == sum(
        row["rows"] for row in slices["PaymentMethod"].values()
    )
    importance = json.loads((root / "reports" / "feature_importance.json").read_text())
    assert set(importance) == set(TELCO_DATA["numerical"]) | set(TELCO_DATA["categorical"])
    assert run(["git", "ls-files", "-s", "src"], root).stdout == src_before  # no code change
    prepare = next(r for r in mlflow_runs(root) if r.data.tags.get("dvc.stage") == "prepare")
    assert prepare.data.metrics["prepare.rows_raw"] == 7043
