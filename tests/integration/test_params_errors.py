"""params.yaml as DVC reads it, through real `dvc exp run -S` and `dvc repro`: a typo or an unknown value in
`model` fails the first stage that reads `model` (train) with one line naming the key, and an unquoted
`positive_label: yes` (a string in YAML 1.2, as DVC reads it) works on a yes/no target."""

from __future__ import annotations

import csv
import json

import pytest

from tests.integration.helpers import DVC, make_repo, reproduce, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("params") / "repo", rows=400)
    reproduce(root)
    return root


@pytest.mark.parametrize(("override", "key"), [("+model.CC=1", "model.CC"), ("model.type=svm", "model.type")])
def test_a_bad_model_key_fails_train_in_one_line(repo, override, key):
    result = run([*DVC, "exp", "run", "-S", override], repo, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and key in errors[0] and "params.yaml" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "Running stage 'train'" in result.stdout and "Running stage 'prepare'" not in result.stdout
    run(["git", "checkout", "--", "params.yaml"], repo)  # DVC leaves the bad value in the workspace


def test_unquoted_yes_is_the_positive_label_of_a_yes_no_target(repo):
    raw = repo / "data" / "raw" / "customers.csv"
    rows = list(csv.DictReader(raw.open()))
    with raw.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "churn": "yes" if row["churn"] == "1" else "no"} for row in rows)
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("positive_label: 1", "positive_label: yes"))
    assert "positive_label: yes\n" in params.read_text()
    run([*DVC, "repro"], repo)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.6
    report = json.loads((repo / "reports" / "classification_report.json").read_text())
    assert "yes" in report and "not yes" in report
