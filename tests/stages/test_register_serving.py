"""The register stage serves the model before registering it, and logs the test metrics on the logged model.

A model whose serving input is broken (its signature lacks a column the pipeline needs, as a hand-edited
signature would) fails the gate with one line, and no version is registered. A good model passes both
checks (`mlflow.models.validate_serving_input` on the saved serving example and on held-out rows), and its
test metrics are on its LoggedModel (MLflow 3's Models view).
"""

from __future__ import annotations

import json
import logging

import pytest

from churn.config import load_params
from churn.pipeline import evaluate, featurize, prepare, register, train

pytestmark = pytest.mark.slow  # a pipeline run and two registrations (log_model, serving checks)

DROPPED = "gender"


def _drop_from_signature(original):
    """raw_signature, minus one input column: the logged model then cannot score what clients send."""

    def broken(data, example, proba):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema

        signature = original(data, example, proba)
        inputs = Schema([c for c in signature.inputs.inputs if c.name != DROPPED])
        return ModelSignature(inputs=inputs, outputs=signature.outputs)

    return broken


@pytest.fixture(scope="module")
def registered(module_workspace):
    """The pipeline, then register with a broken signature (its own pipeline execution), as the decision,
    the log line and the registry show them."""
    from mlflow import MlflowClient

    from churn.tracking.store import tracking_uri

    params = load_params()
    for module in (prepare, featurize, train, evaluate, register):
        module.run(params)
    good = json.loads((module_workspace / "reports" / "register.json").read_text())

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("churn.pipeline.register")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("CHURN_PIPELINE_KEY", "broken-signature")
            monkeypatch.setattr(register, "raw_signature", _drop_from_signature(register.raw_signature))
            register.run(params)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    broken = json.loads((module_workspace / "reports" / "register.json").read_text())

    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name(params.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`dvc.stage` = 'register'")
    return {
        "root": module_workspace,
        "params": params,
        "client": client,
        "experiment_id": experiment.experiment_id,
        "good": good,
        "broken": broken,
        "messages": [r.getMessage() for r in records],
        "register_runs": runs,
        "versions": client.search_model_versions(f"name = '{params.register.model_name}'"),
    }


def test_a_servable_model_passes_both_serving_checks(registered):
    serving = registered["good"]["serving"]
    assert serving["passed"] is True
    assert set(serving["checks"]) == {"serving_example", "test_rows"}
    assert all(check["passed"] and check["rows"] == 5 for check in serving["checks"].values())
    assert registered["good"]["passed"] is True


def test_a_model_that_cannot_be_served_fails_the_gate_with_one_line(registered):
    decision = registered["broken"]
    assert decision["passed"] is False
    assert all(check["passed"] for check in decision["checks"].values()), "the metric thresholds still pass"
    errors = {name: check["error"] for name, check in decision["serving"]["checks"].items()}
    assert set(errors) == {"serving_example", "test_rows"}
    assert all(DROPPED in error and "\n" not in error for error in errors.values()), errors

    lines = [m for m in registered["messages"] if m.startswith("registry ")]
    assert len(lines) == 1 and "\n" not in lines[0], registered["messages"]
    assert lines[0].startswith(f"registry {registered['params'].register.model_name}: no version (gate failed: ")
    assert "serving serving_example: " in lines[0] and "serving test_rows: " in lines[0]
    run = next(r for r in registered["register_runs"] if r.data.tags["registry.decision"].startswith("gate failed"))
    assert run.data.tags["registry.decision"] == lines[0].split(" (", 1)[1].removesuffix(")")


def test_the_broken_model_is_not_registered(registered):
    assert [str(v.version) for v in registered["versions"]] == ["1"]
    assert registered["versions"][0].tags["model.md5"] == registered["good"]["model_md5"]


def test_test_metrics_are_on_the_logged_model(registered):
    import mlflow

    from churn.tracking.store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    version = registered["versions"][0]
    models = mlflow.search_logged_models(experiment_ids=[registered["experiment_id"]], output_format="list")
    model_id = version.model_id or version.source.removeprefix("models:/")  # sqlite registers by source only
    model = next(m for m in models if m.model_id == model_id)
    logged = {m.key: m.value for m in model.metrics}
    metrics = json.loads((registered["root"] / "reports" / "metrics.json").read_text())
    assert logged == {f"test_{k}": pytest.approx(v) for k, v in metrics.items()}
    assert {m.dataset_name for m in model.metrics} == {"prepared_test"}
    assert {m.run_id for m in model.metrics} == {version.run_id}
    # The Models view's search: filter and order logged models by a test metric.
    best = mlflow.search_logged_models(
        experiment_ids=[registered["experiment_id"]],
        filter_string="metrics.test_roc_auc > 0",
        order_by=[{"field_name": "metrics.test_roc_auc", "ascending": False}],
        output_format="list",
    )
    assert model_id in {m.model_id for m in best}


def test_registry_version_names_the_dvc_artifact(registered):
    from churn.system import file_md5

    tags = registered["versions"][0].tags
    assert tags["dvc.artifact"] == "churn-model"
    assert tags["dvc.artifact.path"] == "models"
    assert tags["dvc.artifact.md5"] == file_md5(registered["root"] / "models" / "model.pkl")


def test_predict_measures_drift_against_the_registered_training_profile(registered, tmp_path):
    import pandas as pd

    from churn.tools import predict

    root = registered["root"]
    rows = pd.read_parquet(root / "data" / "prepared" / "test.parquet")
    rows.assign(tenure=rows["tenure"] + 24).to_csv(tmp_path / "shifted.csv", index=False)
    report_path, output = tmp_path / "drift.json", tmp_path / "scored.csv"
    argv = ["--input", str(tmp_path / "shifted.csv"), "--output", str(output), "--drift-report", str(report_path)]
    with pytest.raises(SystemExit) as caught:
        predict.main([*argv, "--fail-on-drift"])
    assert caught.value.code == predict.DRIFT_EXIT
    report = json.loads(report_path.read_text())
    assert "tenure" in report["fail"] and report["columns"]["tenure"]["psi"] > 0.25
    assert report["rows"] == len(rows)
    scored = pd.read_csv(output)  # written all the same, each row flagged or not
    train_max = pd.read_parquet(root / "data" / "prepared" / "train.parquet")["tenure"].max()
    beyond = (rows["tenure"] + 24 > train_max).to_numpy()
    assert beyond.any() and scored[predict.UNSEEN].to_numpy()[beyond].all()  # (another column may flag more rows)
    assert report["unseen_rows"] == int(scored[predict.UNSEEN].sum())
    predict.main(argv)  # without --fail-on-drift: warnings only, exit status 0


def test_predict_explains_each_row_with_the_registered_means(registered, tmp_path):
    import pandas as pd

    from churn.tools import predict

    rows = pd.read_parquet(registered["root"] / "data" / "prepared" / "test.parquet")
    rows.to_parquet(tmp_path / "rows.parquet")
    output = tmp_path / "scored.parquet"
    predict.main(["--input", str(tmp_path / "rows.parquet"), "--output", str(output), "--explain"])
    scored = pd.read_parquet(output)
    assert len(scored) == len(rows)
    first = scored["reason_1"].str.split("=").str[0]
    assert set(first[first != ""]) <= set(registered["params"].data.features)
    assert (first != "").mean() > 0.9  # nearly every row has a column pushing its churn odds up
