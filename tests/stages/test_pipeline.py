"""The five stages run in order on 400 generated customers, with a real MLflow store in the workspace.

One pipeline run per module (a module-scoped fixture); the tests below each check one part of its result.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from churn.config import METRICS, Threshold, load_params
from churn.core.bootstrap import CI_METRICS
from churn.core.evaluation import MAX_CURVE_POINTS
from churn.pipeline import evaluate, featurize, prepare, register, train
from churn.storage.outputs import read_pickle
from churn.system import file_md5

STAGES = ("prepare", "featurize", "train", "evaluate", "register")
MODULES = (prepare, featurize, train, evaluate, register)
PNG = b"\x89PNG\r\n\x1a\n"
# The 400 customers whose keyed id hash falls in the lowest 20% of the range (churn.core.split): 70.
TEST_ROWS = 70
TRAIN_ROWS = 400 - TEST_ROWS
MD5 = re.compile(r"^[0-9a-f]{32}$")

pytestmark = pytest.mark.slow  # the module's one pipeline run takes several seconds (MLflow store, log_model)


def _runs(client, experiment_id):
    return client.search_runs([experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def pipeline(module_workspace):
    """Run prepare .. register once and snapshot MLflow; re-run register with nothing changed; then once
    more with a gate the model cannot pass."""
    from mlflow import MlflowClient

    from churn.tracking.store import tracking_uri

    params = load_params()
    for module in MODULES:
        module.run(params)
    client = MlflowClient(tracking_uri())
    experiment_id = client.get_experiment_by_name(params.mlflow.experiment).experiment_id
    name = params.register.model_name
    first = SimpleNamespace(
        runs=_runs(client, experiment_id),
        versions=client.search_model_versions(f"name = '{name}'"),
        decision=json.loads((module_workspace / "reports" / "register.json").read_text()),
    )

    register.run(load_params())
    rerun = SimpleNamespace(
        runs=_runs(client, experiment_id),
        versions=client.search_model_versions(f"name = '{name}'"),
        decision=json.loads((module_workspace / "reports" / "register.json").read_text()),
    )

    # A stricter gate on the same model, as a new pipeline execution (MLflow refuses to change the params
    # already logged to a parent run): the decision says so, and the registry is left alone.
    thresholds = {**params.register.thresholds, "roc_auc": Threshold(min=0.999)}
    strict = params.model_copy(update={"register": params.register.model_copy(update={"thresholds": thresholds})})
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CHURN_PIPELINE_KEY", "stricter-gate")
        register.run(strict)
    gated = SimpleNamespace(
        versions=client.search_model_versions(f"name = '{name}'"),
        decision=json.loads((module_workspace / "reports" / "register.json").read_text()),
    )
    return SimpleNamespace(root=module_workspace, params=params, client=client, first=first, rerun=rerun, gated=gated)


def _parquet(pipeline, path: str) -> pd.DataFrame:
    return pd.read_parquet(pipeline.root / path)


# --- outputs -------------------------------------------------------------------------------------


def test_prepare_splits_400_rows_by_the_hash_of_their_ids(pipeline):
    train_df = _parquet(pipeline, "data/prepared/train.parquet")
    test_df = _parquet(pipeline, "data/prepared/test.parquet")
    assert (len(train_df), len(test_df)) == (TRAIN_ROWS, TEST_ROWS)
    data = pipeline.params.data
    assert list(train_df.columns) == [*data.id_columns, *data.numerical, *data.categorical, data.target]
    ids = set(train_df["customer_id"]) | set(test_df["customer_id"])
    assert len(ids) == 400
    assert not set(train_df["customer_id"]) & set(test_df["customer_id"])
    assert set(train_df["churn"]) == {0, 1}
    shares = json.loads((pipeline.root / "reports" / "data_quality.json").read_text())["class_shares"]
    assert shares["train"]["1"] == round(train_df["churn"].mean(), 6)  # not stratified: the shares are reported
    assert shares["test"]["1"] == round(test_df["churn"].mean(), 6)
    assert train_df["total_charges"].dtype == "float64"
    assert train_df["total_charges"].isna().sum() + test_df["total_charges"].isna().sum() == int(
        (pd.read_csv(pipeline.root / data.raw_path)["tenure"] == 0).sum()
    )


def test_featurize_writes_complete_numeric_features(pipeline):
    for path, rows in (("data/features/train.parquet", TRAIN_ROWS), ("data/features/test.parquet", TEST_ROWS)):
        features = _parquet(pipeline, path)
        assert len(features) == rows
        assert "churn" in features.columns
        assert not features.isna().any().any()
        assert all(features[c].dtype == "float64" for c in features.columns if c != "churn")
    assert (pipeline.root / "models" / "preprocessor.pkl").is_file()


def test_preprocessor_is_fitted_on_train_split_only(pipeline):
    pre = read_pickle(pipeline.root / "models" / "preprocessor.pkl")
    scaler = pre.named_transformers_["num"].named_steps["scale"]
    numerical = list(pipeline.params.data.numerical)
    train_df = _parquet(pipeline, "data/prepared/train.parquet")[numerical]
    everything = pd.concat([train_df, _parquet(pipeline, "data/prepared/test.parquet")[numerical]])
    np.testing.assert_allclose(scaler.mean_, train_df.fillna(train_df.median()).mean().to_numpy())
    assert not np.allclose(scaler.mean_, everything.fillna(everything.median()).mean().to_numpy())


def test_train_writes_model_and_cv_metrics(pipeline):
    model = read_pickle(pipeline.root / "models" / "model.pkl")
    assert type(model).__name__ == "LogisticRegression"
    cv = json.loads((pipeline.root / "reports" / "cv_metrics.json").read_text())
    assert set(cv) == set(METRICS) | {f"{m}_std" for m in METRICS}
    assert 0.5 < cv["roc_auc"] <= 1.0


def test_evaluate_writes_metrics_and_plot_data(pipeline):
    reports = pipeline.root / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    intervals = {f"{m}_ci_{end}" for m in CI_METRICS for end in ("low", "high")}
    extra = {"ece", "precision_at_k", "recall_at_k", "worst_slice_roc_auc"}
    assert set(metrics) == set(METRICS) | intervals | extra
    assert 0.0 <= metrics["ece"] < 0.5
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRICS if k != "log_loss")
    for name in CI_METRICS:  # 70 test rows: wide intervals around the point estimate
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
        assert metrics[f"{name}_ci_high"] - metrics[f"{name}_ci_low"] > 0.01, name
    assert metrics["roc_auc"] > 0.7  # the generated data has signal; a broken pipeline scores ~0.5
    roc = json.loads((reports / "plots" / "roc.json").read_text())["roc"]
    prc = json.loads((reports / "plots" / "prc.json").read_text())["prc"]
    for points in (roc, prc):
        assert 2 <= len(points) <= MAX_CURVE_POINTS
        assert all(math.isfinite(v) for p in points for v in p.values())
    reliability = json.loads((reports / "plots" / "calibration.json").read_text())["calibration"]
    assert sum(point["rows"] for point in reliability) == TEST_ROWS
    assert all(0.0 <= point[k] <= 1.0 for point in reliability for k in ("predicted", "observed"))
    gains = json.loads((reports / "plots" / "gains.json").read_text())["gains"]
    assert gains[-1] == {"share": 1.0, "gain": 1.0, "lift": 1.0}
    assert all(a["share"] < b["share"] and a["gain"] <= b["gain"] for a, b in itertools.pairwise(gains))
    slices = json.loads((reports / "slices.json").read_text())
    assert list(slices) == ["contract_type", "payment_method"]
    test_df = _parquet(pipeline, "data/prepared/test.parquet")
    for column, values in slices.items():  # every test row in one value of each slice column
        assert sum(row["rows"] for row in values.values()) == TEST_ROWS
        assert {value: row["rows"] for value, row in values.items()} == test_df[column].value_counts().to_dict()
    assert metrics["worst_slice_roc_auc"] == min(
        row["roc_auc"] for values in slices.values() for row in values.values() if row["roc_auc"] is not None
    )
    confusion = pd.read_csv(reports / "plots" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == TEST_ROWS
    assert (confusion["actual"] == confusion["predicted"]).mean() == pytest.approx(metrics["accuracy"])
    report = json.loads((reports / "classification_report.json").read_text())
    assert report["1"]["support"] == int(confusion["actual"].sum())
    churn_share = report["1"]["support"] / TEST_ROWS
    assert metrics["precision_at_k"] > churn_share  # the top 10% of scores hold more churners than chance
    assert metrics["recall_at_k"] == pytest.approx(metrics["precision_at_k"] * 0.1 / churn_share, abs=1e-5)
    importance = json.loads((reports / "feature_importance.json").read_text())
    assert set(importance) == set(pipeline.params.data.features)
    assert sum(importance.values()) == pytest.approx(1.0, abs=1e-5)


FIGURES = ["confusion_matrix", "feature_importance", "roc", "precision_recall", "calibration", "gains", "lift"]


@pytest.mark.parametrize("name", FIGURES)
def test_evaluate_figures_are_png(pipeline, name):
    path = pipeline.root / "reports" / "figures" / f"{name}.png"
    content = path.read_bytes()
    assert content.startswith(PNG)
    assert len(content) > 2000


def test_register_decision_passed(pipeline):
    decision = pipeline.first.decision
    assert decision["passed"] is True
    assert set(decision["checks"]) == {"roc_auc", "log_loss"}
    assert MD5.match(decision["model_md5"])


def test_no_staging_folders_left(pipeline):
    assert list(pipeline.root.rglob(".staging-*")) == []


# --- MLflow --------------------------------------------------------------------------------------


def _parent_and_children(runs):
    parents = [r for r in runs if r.data.tags.get("churn.role") == "pipeline"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_one_parent_with_five_stage_children(pipeline):
    parent, children = _parent_and_children(pipeline.first.runs)
    assert len(pipeline.first.runs) == 6
    assert sorted(c.data.tags["dvc.stage"] for c in children) == sorted(STAGES)
    assert parent.info.status == "FINISHED"
    for child in children:
        tags = child.data.tags
        assert child.info.status == "FINISHED"
        assert MD5.match(tags["data.md5"]), tags
        assert "git.dirty" not in tags and "git.commit" not in tags  # the workspace is no git repository
        assert child.info.run_name == tags["dvc.stage"]


def test_prepare_run_records_raw_data_and_output_hashes(pipeline):
    _, children = _parent_and_children(pipeline.first.runs)
    run = next(c for c in children if c.data.tags["dvc.stage"] == "prepare")
    assert run.data.tags["data.md5"] == file_md5(pipeline.root / pipeline.params.data.raw_path)
    for out in ("data/prepared/train.parquet", "data/prepared/test.parquet"):
        assert run.data.tags[f"dvc.out.{out}"] == file_md5(pipeline.root / out)
    assert run.data.metrics["prepare.rows_train"] == TRAIN_ROWS
    assert run.data.metrics["prepare.rows_test"] == TEST_ROWS


def test_parent_holds_the_test_metrics(pipeline):
    parent, _ = _parent_and_children(pipeline.first.runs)
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    assert parent.data.metrics["test_roc_auc"] == metrics["roc_auc"]
    assert parent.data.metrics["test_roc_auc_ci_low"] == metrics["roc_auc_ci_low"]
    assert parent.data.params["model.type"] == "logistic_regression"


def test_registered_version_is_champion(pipeline):
    name = pipeline.params.register.model_name
    assert [str(v.version) for v in pipeline.first.versions] == ["1"]
    champion = pipeline.client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1"
    assert str(pipeline.client.get_model_version_by_alias(name, "challenger").version) == "1"
    assert champion.tags["model.md5"] == pipeline.first.decision["model_md5"]
    _, children = _parent_and_children(pipeline.first.runs)
    register_run = next(c for c in children if c.data.tags["dvc.stage"] == "register")
    assert champion.run_id == register_run.info.run_id


def test_champion_predicts_probabilities_from_raw_columns(pipeline):
    import mlflow

    from churn.tracking.store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    raw = _parquet(pipeline, "data/prepared/test.parquet")[list(pipeline.params.data.features)]
    model = mlflow.pyfunc.load_model(f"models:/{pipeline.params.register.model_name}@champion")
    proba = np.asarray(model.predict(raw))
    assert proba.shape == (TEST_ROWS, 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # The same numbers as the pipeline's own preprocessor and model files.
    pre = read_pickle(pipeline.root / "models" / "preprocessor.pkl")
    estimator = read_pickle(pipeline.root / "models" / "model.pkl")
    np.testing.assert_allclose(proba[:, 1], estimator.predict_proba(pre.transform(raw))[:, 1])


def test_rerun_of_register_creates_no_new_version(pipeline):
    assert [str(v.version) for v in pipeline.rerun.versions] == ["1"]
    assert pipeline.rerun.decision == pipeline.first.decision
    new_runs = [r for r in pipeline.rerun.runs if r.info.run_id not in {x.info.run_id for x in pipeline.first.runs}]
    assert len(new_runs) == 1
    assert new_runs[0].data.tags["dvc.stage"] == "register"
    assert new_runs[0].data.tags["registry.decision"].startswith("identical to version 1")


def test_failed_gate_registers_nothing(pipeline):
    decision = pipeline.gated.decision
    assert decision["passed"] is False
    assert decision["checks"]["roc_auc"]["passed"] is False
    assert decision["checks"]["log_loss"]["passed"] is True
    assert decision["model_md5"] == pipeline.first.decision["model_md5"]
    assert [str(v.version) for v in pipeline.gated.versions] == ["1"]


def test_register_writes_the_model_card(pipeline):
    card = (pipeline.root / "reports" / "model_card.md").read_text()
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    assert card.startswith(f"# Model card: {pipeline.params.register.model_name}\n")
    low, high = metrics["roc_auc_ci_low"], metrics["roc_auc_ci_high"]
    assert f"| ROC AUC | {metrics['roc_auc']:.3f} | [{low:.3f}, {high:.3f}] |" in card
    assert "| contract_type | Month-to-month |" in card
    stated = pipeline.params.register.card  # intended use and limits come from params (register.card)
    assert f"## Intended use\n\n{stated.intended_use}\n" in card
    assert all(f"- {limit}\n" in card for limit in stated.limits) and stated.limits
    # the card of the fixture's last register run, whose stricter gate the model fails
    assert f"- Failed:\n  - roc_auc = {metrics['roc_auc']:.3f} (needs >= 0.999): FAIL\n" in card
