"""The registry end to end in a temporary git+DVC repository: gated, idempotent versions, champion moves,
the registry CLI, batch scoring, `make serve`, and rebuilding a version from its lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, project_env
from tests.integration.helpers import DVC, PYTHON, make_repo, run
from tests.integration.helpers import reproduce as run_pipeline
from tests.integration.services import free_port

pytestmark = pytest.mark.slow

NAME = "churn_model"
# Pinned so that the weaker and better experiments below stay weaker and better whatever params.yaml holds.
BASELINE = {
    "model": {"type": "logistic_regression", "C": 1.0, "class_weight": None},
    "evaluate": {"threshold": 0.5, "primary_metric": "roc_auc"},
    "register": {
        "model_name": NAME,
        "thresholds": {"roc_auc": {"min": 0.70}, "log_loss": {"max": 0.60}},
        "min_improvement": 0.0,
    },
}
WEAKER = "model.C=0.0001"  # test ROC AUC 0.770 against the baseline's 0.807 on these 600 rows
BETTER = "model.C=0.3"  # 0.808
FEATURES = ["age", "tenure", "monthly_charges", "total_charges", "gender", "contract_type", "payment_method"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("registry") / "repo", params=BASELINE)
    (root / "Makefile").write_bytes((REPO / "Makefile").read_bytes())
    run_pipeline(root)
    return root


def client(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(root: Path) -> dict[str, object]:
    return {str(v.version): v for v in client(root).search_model_versions(f"name = '{NAME}'")}


def alias(root: Path, name: str) -> str:
    return str(client(root).get_model_version_by_alias(NAME, name).version)


def roc_auc(version) -> float:
    return float(version.tags["metric.roc_auc"])


def registry_cli(root: Path, *args: str, check: bool = True):
    return run([PYTHON, "-m", "churn.tools.registry", *args], root, check=check)


def one_error_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- the register stage ----------------------------------------------------------------------------


def test_champion_loads_by_alias_and_scores_raw_csv_rows(repo):
    # Exactly what a user types in the repository root after `make run` (MLflow's default store is
    # sqlite:///mlflow.db in the current directory); the rows are read as pandas reads them (int64 ages).
    code = (
        "import json, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/churn_model@champion')\n"
        "proba = model.predict(pd.read_csv('data/raw/customers.csv').head(50))\n"
        "print(json.dumps({'shape': list(proba.shape), 'p': proba.tolist(),\n"
        "    'inputs': model.metadata.get_input_schema().input_names(),\n"
        "    'format': model.metadata.flavors['sklearn'].get('serialization_format')}))\n"
    )
    result = run([PYTHON, "-c", code], repo)
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["shape"] == [50, 2]
    assert all(0 < p1 < 1 and abs(p0 + p1 - 1) < 1e-12 for p0, p1 in shown["p"])
    assert shown["inputs"] == FEATURES  # raw columns, without the id or the target
    assert shown["format"] == "skops"
    assert "pickle" not in result.stderr.lower()


def test_first_version_carries_its_lineage_and_both_aliases(repo):
    found = versions(repo)
    assert list(found) == ["1"]
    v1 = found["1"]
    assert alias(repo, "champion") == alias(repo, "challenger") == "1"
    pointer = yaml.safe_load((repo / "data" / "raw" / "customers.csv.dvc").read_text())
    assert v1.tags["data.md5"] == pointer["outs"][0]["md5"]
    assert v1.tags["data.path"] == "data/raw/customers.csv"
    assert v1.tags["git.commit"] == run(["git", "rev-parse", "HEAD~1"], repo).stdout.strip()
    assert "dvc.exp_name" not in v1.tags  # plain `dvc repro`
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert roc_auc(v1) == metrics["roc_auc"]
    described = json.loads(v1.description)
    assert described["metrics"] == metrics
    assert described["params"]["model"]["C"] == 1.0
    assert described["lineage"]["git.commit"] == v1.tags["git.commit"]
    artifacts = [a.path for a in client(repo).list_artifacts(v1.run_id, "lineage")]
    assert artifacts == ["lineage/params.yaml"]
    assert client(repo).get_registered_model(NAME).tags["champion.history"] == "1"


def test_forced_repro_with_nothing_changed_creates_no_version(repo):
    lock = (repo / "dvc.lock").read_text()
    result = run([*DVC, "repro", "--force"], repo)
    assert "identical to version 1" in result.stdout + result.stderr
    assert list(versions(repo)) == ["1"]
    assert (repo / "dvc.lock").read_text() == lock  # every output rebuilt byte for byte


def test_weaker_experiment_leaves_the_champion(repo):
    before = versions(repo)
    run([*DVC, "exp", "run", "-S", WEAKER], repo)
    after = versions(repo)
    assert alias(repo, "champion") == "1"
    decision = json.loads((repo / "reports" / "register.json").read_text())
    if not decision["passed"]:  # failing the gate: no version at all
        assert after.keys() == before.keys()
        return
    (new,) = set(after) - set(before)
    assert alias(repo, "challenger") == new
    assert roc_auc(after[new]) < roc_auc(after["1"])
    assert after[new].tags["dvc.exp_name"]


def test_better_experiment_takes_the_champion(repo):
    before = versions(repo)
    run([*DVC, "exp", "run", "-S", BETTER], repo)
    after = versions(repo)
    (new,) = set(after) - set(before)
    assert roc_auc(after[new]) > roc_auc(after["1"]), "the BETTER setting no longer beats the baseline"
    assert alias(repo, "champion") == alias(repo, "challenger") == new
    tags = after[new].tags
    assert tags["dvc.baseline_rev"] == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert tags["git.commit"] == tags["dvc.baseline_rev"]  # inside an experiment HEAD is the baseline
    assert json.loads(after[new].description)["params"]["model"]["C"] == float(BETTER.split("=")[1])
    assert client(repo).get_registered_model(NAME).tags["champion.history"].split(",")[-1] == new


# --- the registry CLI ------------------------------------------------------------------------------


def test_cli_lists_versions_with_aliases_and_metrics(repo):
    rows = json.loads(registry_cli(repo, "list", "--json").stdout)
    assert [r["version"] for r in rows] == sorted(versions(repo), key=int)
    champion = alias(repo, "champion")
    assert {r["version"] for r in rows if "champion" in r["aliases"]} == {champion}
    assert all("roc_auc" in r["metrics"] and r["git_commit"] for r in rows)
    table = registry_cli(repo, "list").stdout.splitlines()
    assert table[0].split()[:3] == ["version", "aliases", "created"]
    assert any(line.split()[0] == champion and "champion" in line for line in table[1:])


def test_cli_promote_and_rollback_follow_the_champion_history(repo):
    better = alias(repo, "champion")
    assert better != "1"
    registry_cli(repo, "promote", "1")
    assert alias(repo, "champion") == "1"
    registry_cli(repo, "rollback")  # undoes the promotion
    assert alias(repo, "champion") == better
    registry_cli(repo, "rollback")  # the champion before `better`
    assert alias(repo, "champion") == "1"
    line = one_error_line(registry_cli(repo, "rollback", check=False))
    assert "no earlier champion" in line
    registry_cli(repo, "promote", better)
    assert alias(repo, "champion") == better


def test_cli_lineage_shows_commit_experiment_data_params_metrics(repo):
    shown = json.loads(registry_cli(repo, "lineage", "champion").stdout)
    assert shown["version"] == alias(repo, "champion")
    assert "champion" in shown["aliases"]
    assert {"git.commit", "dvc.exp_name", "dvc.baseline_rev", "data.md5", "data.path", "model.md5"} <= set(
        shown["tags"]
    )
    assert shown["params"]["model"]["C"] == float(BETTER.split("=")[1])
    assert shown["metrics"]["roc_auc"] == roc_auc(versions(repo)[shown["version"]])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("lineage", "99"), "no version or alias '99'"),
        (("promote", "99"), "no version or alias '99'"),
        (("list", "--name", "nope"), "no registered model 'nope'"),
    ],
)
def test_cli_unknown_version_or_name_is_one_line(repo, args, expected):
    assert expected in one_error_line(registry_cli(repo, *args, check=False))


# --- batch scoring ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows(repo) -> pd.DataFrame:
    """Real rows of the raw file (as text, like a CSV on disk) plus one with an unseen category, a blank
    category and blank numbers."""
    raw = pd.read_csv(repo / "data" / "raw" / "customers.csv", dtype=str, keep_default_na=False).head(30)
    odd = {
        "customer_id": "X0001",
        "age": "33",
        "tenure": "",
        "monthly_charges": " 50.5 ",
        "total_charges": "",
        "gender": " Male ",
        "contract_type": "Weekly",
        "payment_method": "",
        "churn": "",
    }
    return pd.concat([raw, pd.DataFrame([odd])], ignore_index=True)


def predict(repo: Path, source: Path, target: Path, check: bool = True):
    args = ["--model", f"models:/{NAME}@champion", "--input", str(source), "--output", str(target)]
    return run([PYTHON, "-m", "churn.tools.predict", *args], repo, check=check)


@pytest.fixture(scope="module")
def scored_csv(repo, rows, tmp_path_factory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("scoring")
    rows.to_csv(folder / "in.csv", index=False)
    predict(repo, folder / "in.csv", folder / "out.csv")
    return pd.read_csv(folder / "out.csv", dtype={"customer_id": str})


def test_predict_csv_passes_ids_through_and_labels_at_the_threshold(scored_csv, rows):
    assert list(scored_csv.columns) == ["customer_id", "churn_probability", "churn_label", "unseen_values"]
    # the one row with a category the model never met in training (contract "Weekly") is flagged
    weekly = rows["contract_type"] == "Weekly"
    assert weekly.sum() == 1 and scored_csv.loc[weekly, "unseen_values"].all()
    assert scored_csv["customer_id"].tolist() == rows["customer_id"].tolist()
    assert scored_csv["churn_probability"].between(0, 1, inclusive="neither").all()
    assert (scored_csv["churn_label"] == (scored_csv["churn_probability"] >= 0.5).astype(int)).all()


def test_predict_parquet_gives_the_same_scores_as_csv(repo, rows, scored_csv, tmp_path):
    typed = rows.copy()
    for column in ("age", "tenure", "monthly_charges", "total_charges"):
        typed[column] = pd.to_numeric(typed[column].str.strip(), errors="coerce")
    typed.to_parquet(tmp_path / "in.parquet", index=False)
    predict(repo, tmp_path / "in.parquet", tmp_path / "out.parquet")
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored["customer_id"].tolist() == scored_csv["customer_id"].tolist()
    assert (scored["churn_probability"] - scored_csv["churn_probability"]).abs().max() < 1e-12
    assert not list(tmp_path.glob(".out.parquet.tmp-*"))


def test_predict_missing_column_is_one_line_naming_file_and_column(repo, rows, tmp_path):
    rows.drop(columns=["tenure"]).to_csv(tmp_path / "in.csv", index=False)
    line = one_error_line(predict(repo, tmp_path / "in.csv", tmp_path / "out.csv", check=False))
    assert str(tmp_path / "in.csv") in line
    assert "missing column 'tenure'" in line
    assert not (tmp_path / "out.csv").exists()


# --- serving ---------------------------------------------------------------------------------------


def test_make_serve_answers_with_the_batch_scores(repo, scored_csv):
    venv = repo / ".venv"
    venv.symlink_to(Path(sys.executable).parent.parent)  # `make serve` uses the repository's .venv
    port = free_port()
    log = repo / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["make", "serve", f"PORT={port}"],
            cwd=repo,
            env=project_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"make serve exited {server.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /ping answer within 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(1)

        # The same rows as a client sends them: numbers as JSON numbers, blanks as null, extra columns
        # included (the server ignores them). The server does not strip text, so the odd row's is clean.
        frame = pd.read_csv(repo / "data" / "raw" / "customers.csv").head(30)
        odd = {**dict.fromkeys(frame.columns), "customer_id": "X0001", "age": 33, "monthly_charges": 50.5}
        odd.update({"gender": "Male", "contract_type": "Weekly"})
        frame = pd.concat([frame, pd.DataFrame([odd])], ignore_index=True)
        body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        served = [p["churn_probability"] for p in predictions]
        assert len(served) == len(scored_csv)
        assert max(abs(a - b) for a, b in zip(served, scored_csv["churn_probability"], strict=True)) < 1e-9
        assert [p["churn_label"] for p in predictions] == scored_csv["churn_label"].tolist()  # 0/1, as in the table
        assert "127.0.0.1" in log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        venv.unlink()


# --- reproducing a version -------------------------------------------------------------------------


def reproduce(root: Path, version: str):
    before = sorted(versions(root))
    result = run([PYTHON, "-m", "churn.tools.reproduce", version], root)
    assert result.stdout.strip() == "identical", result.stderr[-3000:]
    assert "byte-identical" in result.stderr
    assert sorted(versions(root)) == before  # the rebuild logged to a throwaway store
    worktrees = run(["git", "worktree", "list", "--porcelain"], root).stdout
    assert worktrees.count("worktree ") == 1


def test_reproduce_rebuilds_an_experiment_version_identically(repo):
    assert versions(repo)[alias(repo, "champion")].tags["dvc.exp_name"]
    reproduce(repo, "champion")


def test_fresh_clone_registers_its_own_champion_and_reproduces_it(repo, tmp_path):
    # A clone has the committed results but an empty store: `dvc repro` must still register the model.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    raw = Path("data/raw/customers.csv")
    (clone / raw).write_bytes((repo / raw).read_bytes())  # what `make data` does from the DVC remote
    run([PYTHON, "-m", "churn.tools.store", "init"], clone)
    run([*DVC, "repro"], clone)
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    assert list(versions(clone)) == ["1"], "dvc repro skipped the register stage: is reports/register.json in git?"
    assert alias(clone, "champion") == "1"
    assert versions(clone)["1"].tags["git.commit"] == run(["git", "rev-parse", "HEAD"], clone).stdout.strip()
    reproduce(clone, "champion")


def test_reproduce_unknown_version_is_one_line(repo):
    line = one_error_line(run([PYTHON, "-m", "churn.tools.reproduce", "99"], repo, check=False))
    assert "no version or alias '99'" in line
