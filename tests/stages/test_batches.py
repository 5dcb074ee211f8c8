"""Batch size changes how much a stage holds, never what it computes: prepare, featurize and evaluate on 400
generated customers in one batch (resources.batch_rows 1,000,000) and in batches of 7 rows, whose statistics are
merged across dozens of batches; and xgboost trained from external memory.
"""

from __future__ import annotations

import json
import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from churn.config import load_params
from churn.errors import ChurnError
from churn.pipeline import evaluate, featurize, prepare, train
from churn.storage.outputs import read_pickle

pytestmark = pytest.mark.slow  # a dozen stage runs with a real MLflow store

BATCH = 7  # rows per batch: every statistic is merged across dozens of batches


def resources(params, **values):
    return params.model_copy(update={"resources": params.resources.model_copy(update=values)})


def batches(params, **values):
    return resources(params, batch_rows=BATCH, **values)


def _reports(root) -> dict:
    reports = root / "reports"
    return {
        "metrics": json.loads((reports / "metrics.json").read_text()),
        "roc": json.loads((reports / "plots" / "roc.json").read_text()),
        "prc": json.loads((reports / "plots" / "prc.json").read_text()),
        "report": json.loads((reports / "classification_report.json").read_text()),
        "importance": json.loads((reports / "feature_importance.json").read_text()),
        "confusion": (reports / "plots" / "confusion.csv").read_text(),
        "slices": json.loads((reports / "slices.json").read_text()),
        "curves": [(reports / "plots" / f"{name}.json").read_text() for name in ("calibration", "gains")],
    }


@pytest.fixture(scope="module")
def runs(module_workspace):
    """prepare, featurize, train, evaluate in one batch; then featurize and evaluate in batches of 7."""
    root, params = module_workspace, load_params()
    # a numeric slice column too: its quantile bins found in batches of 7
    slices = params.evaluate.model_copy(update={"slices": ("contract_type", "tenure")})
    params = params.model_copy(update={"evaluate": slices})
    assert params.resources.batch_rows >= 400
    prepare.run(params)
    featurize.run(params)
    whole = {
        "train": pd.read_parquet(root / "data/features/train.parquet"),
        "test": pd.read_parquet(root / "data/features/test.parquet"),
        "preprocessor": read_pickle(root / "models/preprocessor.pkl"),
    }
    train.run(params)
    evaluate.run(params)
    whole["reports"] = _reports(root)
    featurize.run(batches(params))
    small = {
        "train": pd.read_parquet(root / "data/features/train.parquet"),
        "test": pd.read_parquet(root / "data/features/test.parquet"),
        "preprocessor": read_pickle(root / "models/preprocessor.pkl"),
    }
    # evaluate in batches of 7 on the one-batch test features and preprocessor (and the model trained on them)
    whole["test"].to_parquet(root / "data/features/test.parquet", index=False)
    (root / "models/preprocessor.pkl").write_bytes(pickle.dumps(whole["preprocessor"]))
    shutil.copy(root / "models/model.pkl", root / "model.pkl")
    evaluate.run(batches(params))
    small["reports"] = _reports(root)
    return SimpleNamespace(root=root, params=params, whole=whole, small=small)


def test_featurize_in_batches_writes_the_one_batch_features(runs):
    for split in ("train", "test"):
        a, b = runs.whole[split], runs.small[split]
        assert list(a.columns) == list(b.columns)
        assert a.dtypes.equals(b.dtypes)
        onehot = [c for c in a.columns if c.startswith("cat__")] + ["churn"]
        pd.testing.assert_frame_equal(a[onehot], b[onehot])  # categories and infrequent groups: exactly
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-12, atol=1e-12)  # scaler: float noise


def test_featurize_in_batches_learns_the_same_statistics(runs):
    a, b = runs.whole["preprocessor"], runs.small["preprocessor"]
    impute = [t.named_transformers_["num"].named_steps["impute"].statistics_ for t in (a, b)]
    np.testing.assert_array_equal(impute[0], impute[1])  # the median, exactly
    scale = [t.named_transformers_["num"].named_steps["scale"] for t in (a, b)]
    np.testing.assert_allclose(scale[1].mean_, scale[0].mean_, rtol=1e-13)
    np.testing.assert_allclose(scale[1].var_, scale[0].var_, rtol=1e-12)
    encoders = [t.named_transformers_["cat"].named_steps["onehot"] for t in (a, b)]
    for left, right in zip(encoders[0].categories_, encoders[1].categories_, strict=True):
        assert left.tolist() == right.tolist()
    assert encoders[0].infrequent_categories_ == encoders[1].infrequent_categories_ or all(
        (x is None and y is None) or list(x) == list(y)
        for x, y in zip(encoders[0].infrequent_categories_, encoders[1].infrequent_categories_, strict=True)
    )
    assert list(a.get_feature_names_out()) == list(b.get_feature_names_out())
    assert a.output_indices_ == b.output_indices_


def test_evaluate_in_batches_writes_the_one_batch_reports(runs):
    a, b = runs.whole["reports"], runs.small["reports"]
    assert a["metrics"].keys() == b["metrics"].keys()
    for name, value in a["metrics"].items():
        assert abs(b["metrics"][name] - value) <= 1e-9, name
    for name in ("roc", "prc", "report", "importance", "confusion", "slices", "curves"):
        assert a[name] == b[name], name
    assert len(a["slices"]["tenure"]) == 4  # quartiles of the test split's tenure
    assert sum(row["rows"] for row in a["slices"]["tenure"].values()) == a["report"]["macro avg"]["support"]
    assert a["confusion"].count("\n") == 1 + a["report"]["macro avg"]["support"]  # a row per test example


def test_prepare_splits_alike_in_batches_of_7_or_1_000_000_rows(runs, monkeypatch):
    root, params = runs.root, runs.params
    outputs = {}
    for name, settings in (("batches of 7", batches(params)), ("one batch", resources(params, batch_rows=1_000_000))):
        monkeypatch.setenv("CHURN_PIPELINE_KEY", f"prepare-{name}")  # another execution: other params
        prepare.run(settings)
        outputs[name] = {split: pd.read_parquet(root / f"data/prepared/{split}.parquet") for split in ("train", "test")}
        outputs[name]["quality"] = json.loads((root / "reports/data_quality.json").read_text())
    expected = outputs["one batch"]
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(outputs["batches of 7"][split], expected[split])
    assert outputs["batches of 7"]["quality"] == expected["quality"]
    first, second = expected["train"], expected["test"]
    assert len(first) + len(second) == 400
    assert not set(first["customer_id"]) & set(second["customer_id"])
    assert 0.12 < len(second) / 400 < 0.28  # test_size 0.2, up to the hash's binomial noise on 400 rows
    data = params.data
    assert list(first.columns) == [*data.id_columns, *data.numerical, *data.categorical, data.target]
    assert first["total_charges"].dtype == "float64"
    quality = expected["quality"]
    assert quality["test_rows_in_train"] == 0 and quality["rows_used"] == 400
    assert quality["class_shares"]["test"]["1"] == round(second["churn"].mean(), 6)


def test_prepare_in_batches_drops_the_rows_pandas_finds_repeated(runs, monkeypatch):
    from churn.core.schema import clean_table

    root, params = runs.root, runs.params
    raw = pd.read_csv(root / params.data.raw_path, dtype=str, keep_default_na=False)
    repeated = pd.concat([raw, raw.iloc[[3, 50, 50, 399]].assign(customer_id=lambda f: f["customer_id"] + "x")])
    repeated.to_csv(root / "repeated.csv", index=False)
    data = params.data.model_copy(update={"raw_path": "repeated.csv"})
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "repeated")
    prepare.run(batches(params.model_copy(update={"data": data})))
    report = json.loads((root / "reports/data_quality.json").read_text())
    clean = clean_table(repeated.reset_index(drop=True), data, "x")[0]
    expected = int(clean.duplicated(subset=[*data.features, data.target]).sum())
    assert report["rows_duplicate"] == expected >= 4
    assert report["rows_duplicate_dropped"] == expected
    assert report["rows_used"] == 404 - expected


def test_prepare_in_batches_names_the_row_of_a_bad_value(runs, monkeypatch):
    from churn.errors import DataError

    root, params = runs.root, runs.params
    raw = pd.read_csv(root / params.data.raw_path, dtype=str, keep_default_na=False)
    raw.loc[123, "age"] = "forty"
    raw.to_csv(root / "bad.csv", index=False)
    data = params.data.model_copy(update={"raw_path": "bad.csv"})
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "bad")
    with pytest.raises(DataError, match=r"bad.csv: column 'age' must be numeric, found 'forty' at data row 124"):
        prepare.run(batches(params.model_copy(update={"data": data})))


def test_xgboost_trains_from_external_memory(runs, monkeypatch):
    root, params = runs.root, runs.params
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "xgboost")
    prepare.run(params)
    featurize.run(params)
    xgb = params.model.model_copy(update={"type": "xgboost"})
    model_params = params.model_copy(update={"model": xgb})
    train.run(model_params)
    in_memory = read_pickle(root / "models/model.pkl")
    monkeypatch.setenv("CHURN_PIPELINE_KEY", "xgboost-external")
    train.run(resources(model_params, external_memory_rows=0, batch_rows=50, cv_sample_rows=200))
    external = read_pickle(root / "models/model.pkl")
    assert type(external) is type(in_memory)
    assert repr(external.get_params()) == repr(in_memory.get_params())  # (repr: `missing` is nan)
    test = pd.read_parquet(root / "data/features/test.parquet")
    x, y = test.drop(columns=["churn"]).to_numpy(), test["churn"].to_numpy()
    from sklearn.metrics import roc_auc_score

    auc = [roc_auc_score(y, m.predict_proba(x)[:, 1]) for m in (in_memory, external)]
    assert abs(auc[0] - auc[1]) < 0.03, auc
    cv = json.loads((root / "reports/cv_metrics.json").read_text())
    assert 0.6 < cv["roc_auc"] <= 1.0
    assert not list(root.glob(".staging-*"))  # xgboost's pages went with the staging folder


def test_other_families_stop_past_the_external_memory_threshold(runs):
    params = resources(runs.params, external_memory_rows=10)
    with pytest.raises(ChurnError, match=r"model.type logistic_regression trains in memory .* use model.type xgboost"):
        train.run(params)
