"""The stages' batch-wise pure parts (churn.core.streaming, churn.core.schema.CleanBatches) against what they stand
in for: numpy's median, sklearn's fitted preprocessor and metrics, pandas' duplicated; and batch sizes that
change nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm

from churn.config import load_params
from churn.core import streaming as s
from churn.core.features import build_preprocessor, transform
from churn.core.generate import generate
from churn.core.schema import CleanBatches, clean_table
from churn.core.split import row_keys
from churn.errors import DataError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def clean(params):
    raw = generate(2000, 5).astype(str)
    raw.loc[raw.index % 17 == 0, "total_charges"] = ""
    raw.loc[raw.index % 23 == 0, "payment_method"] = ""
    clean = clean_table(raw, params.data, "x")[0]
    return pa.Table.from_pandas(clean, preserve_index=False).to_pandas()  # as featurize reads data/prepared


def _batches(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + rows] for i in range(0, len(frame), rows)]


@pytest.mark.parametrize("collect", [1, 10, s.COLLECT])
def test_exact_medians_equal_numpy(collect):
    rng = np.random.default_rng(0)
    for trial in range(20):
        x = np.round(rng.normal(0, 1e3, size=int(rng.integers(1, 3000))), trial % 3)
        if trial % 4 == 0:
            x = np.concatenate([x, np.zeros(2000), -np.ones(5)])
        x[rng.random(len(x)) < 0.1] = np.nan
        frames = [pd.DataFrame({"a": part}) for part in np.array_split(x, 7)]
        summary = s.NumericSummary()
        for frame in frames:
            summary.update(frame["a"].to_numpy(), s.column_means(frame, ["a"])["a"])
        median = s.exact_medians({"a": summary}, lambda frames=frames: iter(frames), collect=collect)["a"]
        assert median == np.median(x[~np.isnan(x)])
        present = x[~np.isnan(x)]
        assert summary.count == len(present) and summary.missing == len(x) - len(present)
        assert summary.mean == pytest.approx(present.mean(), rel=1e-12)


def test_keys_keep_order_and_are_batch_independent():
    values = np.array([-np.inf, -2.0, -0.5, 0.0, 1e-300, 3.0, np.inf])
    keys = s.float_keys(values)
    assert (np.diff(keys.astype(object)) > 0).all()
    np.testing.assert_array_equal(s.key_floats(keys), values)
    whole = s.position_keys(0, 1000, 3)
    assert len(np.unique(whole)) == 1000
    np.testing.assert_array_equal(whole, np.concatenate([s.position_keys(0, 400, 3), s.position_keys(400, 600, 3)]))


def _from_statistics(params, settings, frame: pd.DataFrame, rows: int):
    """The preprocessor fitted from statistics gathered over `frame` in batches of `rows` rows."""
    numeric = {c: s.NumericSummary() for c in params.data.numerical}
    categories: dict = {}
    batches = _batches(frame, rows)
    numerical = list(params.data.numerical)
    for batch in batches:
        means = s.column_means(batch, numerical)
        for name, summary in numeric.items():
            summary.update(batch[name].to_numpy(), means[name])
        s.count_categories(batch, params.data.categorical, categories)
    numeric_batches = lambda: (b[list(params.data.numerical)] for b in batches)  # noqa: E731
    if settings.numeric_impute == "median":
        fills = s.exact_medians(numeric, numeric_batches)
    else:
        fills = {name: summary.mean for name, summary in numeric.items()}
    preprocessor = build_preprocessor(params.data, settings)
    return s.fit_from_statistics(preprocessor, frame.iloc[:0], fills, categories, numeric_batches)


def _fitted_state(preprocessor) -> dict:
    """What a fitted preprocessor learned, through public attributes only."""
    numeric = preprocessor.named_transformers_["num"].named_steps
    encoder = preprocessor.named_transformers_["cat"].named_steps["onehot"]
    state = {
        "features": list(preprocessor.get_feature_names_out()),
        "output_indices": preprocessor.output_indices_,
        "fills": numeric["impute"].statistics_,
        "categories": encoder.categories_,
        "infrequent": encoder.infrequent_categories_,
        "drop": encoder.drop_idx_,
    }
    if "scale" in numeric:
        scaler = numeric["scale"]
        state.update(mean=scaler.mean_, var=scaler.var_, scale=scaler.scale_, seen=scaler.n_samples_seen_)
    return state


def _assert_same(got, expected, name: str) -> None:
    """Equal bit for bit, dtypes included (arrays, lists of arrays, and plain values)."""
    if isinstance(expected, list | tuple) and expected and isinstance(expected[0], np.ndarray):
        assert len(got) == len(expected), name
        for a, b in zip(got, expected, strict=True):
            _assert_same(a, b, name)
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    else:
        assert repr(got) == repr(expected), name


SETTINGS = [("median", True, 10), ("mean", False, 200), ("median", True, 1), ("mean", True, 10), ("median", True, 5000)]


@pytest.mark.parametrize(("impute", "scale", "frequency"), SETTINGS)
def test_preprocessor_from_statistics_is_the_fitted_one(params, clean, impute, scale, frequency):
    """Batches of 7 rows: every learned statistic as fitting on the whole table (means and the scaler's moments to
    1e-12: partial_fit merges batches), and so the same transform, of the table and of categories it never saw."""
    settings = params.featurize.model_copy(
        update={"numeric_impute": impute, "scale": scale, "min_category_frequency": frequency}
    )
    fitted = build_preprocessor(params.data, settings).fit(clean)
    built = _from_statistics(params, settings, clean, 7)
    expected, got = _fitted_state(fitted), _fitted_state(built)
    assert expected.keys() == got.keys()
    for name in expected:
        if name in ("mean", "var", "scale") or (name, impute) == ("fills", "mean"):
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0, err_msg=name)
        else:
            _assert_same(got[name], expected[name], name)
    unseen = clean.head(20).assign(gender="other", contract_type=np.nan, payment_method="Bitcoin")
    for frame in (clean, unseen):
        np.testing.assert_allclose(
            transform(built, frame).to_numpy(), transform(fitted, frame).to_numpy(), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize(("impute", "scale", "frequency"), SETTINGS)
def test_one_batch_is_fitted_exactly_as_the_whole_table(params, clean, impute, scale, frequency):
    """A table of one batch: the preprocessor is the one fitted on the whole table in memory, bit for bit, down
    to its pickle (what featurize writes)."""
    settings = params.featurize.model_copy(
        update={"numeric_impute": impute, "scale": scale, "min_category_frequency": frequency}
    )
    fitted = build_preprocessor(params.data, settings).fit(clean)
    built = _from_statistics(params, settings, clean, len(clean))
    expected, got = _fitted_state(fitted), _fitted_state(built)
    assert expected.keys() == got.keys()
    for name in expected:
        _assert_same(got[name], expected[name], name)
    np.testing.assert_array_equal(transform(built, clean).to_numpy(), transform(fitted, clean).to_numpy())
    assert pickle.dumps(built, protocol=5) == pickle.dumps(fitted, protocol=5)


def test_score_counts_give_the_full_arrays_metrics_and_curves():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    proba = np.clip(np.round(rng.random(3000) * 0.6 + y * 0.3, 3), 0, 1).astype(np.float32)
    counts = s.ScoreCounts(compact_at=50)
    for start in range(0, 3000, 97):
        counts.update(y[start : start + 97], proba[start : start + 97])
    labels, scores, weights = counts.arrays()
    assert weights.sum() == 3000 and len(scores) < 3000
    for metric in (skm.roc_auc_score, skm.average_precision_score, skm.brier_score_loss):
        weighted = metric(labels, scores.astype(np.float64), sample_weight=weights)
        assert abs(weighted - metric(y, proba.astype(np.float64))) <= 1e-12
    from churn.core.evaluation import classification_metrics

    assert classification_metrics(labels, scores, 0.5, sample_weight=weights) == classification_metrics(y, proba, 0.5)
    full = skm.roc_curve(y, proba)
    weighted = skm.roc_curve(labels, scores, sample_weight=weights)
    for a, b in zip(full, weighted, strict=True):
        np.testing.assert_array_equal(a, b)


def test_confusion_rows_keep_each_example_in_order_then_proportions():
    actual, predicted = np.array([1, 0, 0, 1, 1, 0]), np.array([1, 1, 0, 0, 1, 0])
    rows = s.ConfusionRows(100)
    for start in range(0, 6, 4):
        rows.update(actual[start : start + 4], predicted[start : start + 4])
    assert rows.rows(np.array([[2, 1], [1, 2]])) == list(zip(actual.tolist(), predicted.tolist(), strict=True))
    past = s.ConfusionRows(100)
    past.update(np.zeros(17001, dtype=int), np.zeros(17001, dtype=int))
    scaled = past.rows(np.array([[5000, 3000], [2000, 7001]]))
    assert len(scaled) == 100
    assert pd.Series(scaled).value_counts().to_dict() == {(0, 0): 29, (0, 1): 18, (1, 0): 12, (1, 1): 41}


def test_seen_keys_find_the_repeats_pandas_finds(params, clean):
    identity = [*params.data.features, params.data.target]
    frame = pd.concat([clean, clean.sample(300, random_state=1), clean.head(10)], ignore_index=True)
    keys = row_keys(frame[identity], seed=0)
    seen = s.SeenKeys()
    first = np.concatenate([seen.first_seen(keys[i : i + 37]) for i in range(0, len(keys), 37)])
    np.testing.assert_array_equal(first, ~frame.duplicated(subset=identity).to_numpy())
    np.testing.assert_array_equal(seen.contains(keys), np.ones(len(keys), dtype=bool))
    assert not seen.contains(np.array([0, 2**64 - 1], dtype=np.uint64)).any()


def test_clean_batches_of_11_rows_give_the_one_batch_rows(params):
    raw = generate(300, 9).astype(str)
    raw.loc[[4, 40], "churn"] = ""
    cleaner = CleanBatches(params.data, "x")
    parts = []
    for start in range(0, 300, 11):
        batch = raw.iloc[start : start + 11]
        parts.append(cleaner.clean(batch))
    assert cleaner.finish() == ("0", "1") and cleaner.unlabeled == 2
    whole, labels = clean_table(raw, params.data, "x")
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    assert len(whole) == 298 and labels == ("0", "1")


def test_clean_batches_name_the_file_row_and_check_the_whole_table(params):
    raw = generate(50, 9).astype(str)
    raw.loc[33, "tenure"] = "soon"
    cleaner = CleanBatches(params.data, "x.csv")
    with pytest.raises(DataError, match=r"x.csv: column 'tenure' must be numeric, found 'soon' at data row 34"):
        for start in range(0, 50, 8):
            cleaner.clean(raw.iloc[start : start + 8])
    one_class = CleanBatches(params.data, "x.csv")
    one_class.clean(raw.iloc[:5].assign(churn="0"))
    with pytest.raises(DataError, match=r"target 'churn' has one class \(0\); need two"):
        one_class.finish()


def test_resources_block_errors_are_one_line(params_raw):
    from churn.config import parse_params
    from churn.errors import ChurnError

    params_raw["resources"]["streaming_rows"] = 0  # gone: every table takes the batch-wise path
    with pytest.raises(
        ChurnError, match=r"^params.yaml: resources.streaming_rows is not a known key \(expected one of"
    ):
        parse_params(params_raw)
    del params_raw["resources"]["streaming_rows"]

    params_raw["resources"]["batch_rows"] = 0
    with pytest.raises(ChurnError, match=r"^params.yaml: resources.batch_rows must be an integer >= 1, got 0$"):
        parse_params(params_raw)
    params_raw["resources"]["batch_rows"] = 10
    params_raw["resources"]["dask_scheduler"] = 8786
    with pytest.raises(ChurnError, match=r"resources.dask_scheduler must be a Dask scheduler address"):
        parse_params(params_raw)


def test_scheduler_from_params_else_the_environment(params_raw, monkeypatch):
    from churn.config import parse_params

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert parse_params(params_raw).resources.scheduler() == ""  # the default: no Dask
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://env:8786")
    assert parse_params(params_raw).resources.scheduler() == "tcp://env:8786"
    params_raw["resources"]["dask_scheduler"] = "tcp://params:8786"
    assert parse_params(params_raw).resources.scheduler() == "tcp://params:8786"
