"""How train fits a model it cannot or should not hold in memory: xgboost from external memory (pages on disk)
or on a Dask cluster; and the stratified sample cross-validation runs on past resources.external_memory_rows.
train.mode() decides which, by one rule. The model is the XGBClassifier the in-memory fit makes (same class, same
hyper-parameters), so register, evaluate and scoring take it as they take any other.

Cross-validation past resources.external_memory_rows runs on a stratified sample of resources.cv_sample_rows
train rows, in memory, with the same folds (the preprocessor refitted in each fold): five external-memory fits
over 4/5 of the split would cost four times the final fit, for a score whose standard error is already about
0.001 of ROC AUC at a 1M-row sample, while evaluate scores the final model exactly on the whole test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from churn.config import Params
from churn.core.models import build_model
from churn.core.streaming import position_keys, select_keys, top_digits
from churn.storage.parquet import iter_parquet, parquet_rows

log = logging.getLogger(__name__)


def stratified_sample(params: Params, path: Path, rows: int) -> pd.DataFrame:
    """`rows` rows of `path` (or all of them), each class in its share of the file (largest remainders): the
    rows with the smallest seeded keys of their position, found exactly in passes over the target column."""
    target, seed, batch_rows = params.data.target, params.train.seed, params.resources.batch_rows
    total = parquet_rows(path)
    if rows >= total:
        return pd.concat(list(iter_parquet(path, batch_rows)), ignore_index=True)

    def keyed(columns: list[str] | None = None):
        start = 0
        for frame in iter_parquet(path, batch_rows, columns):
            keys = position_keys(start, len(frame), seed)
            start += len(frame)
            yield frame, keys, frame[target].to_numpy()

    counts: dict[int, int] = {}
    digits: dict[int, np.ndarray] = {}
    for _, keys, y in keyed([target]):
        for label in np.unique(y).tolist():
            counts[label] = counts.get(label, 0) + int((y == label).sum())
            digits[label] = digits.get(label, 0) + top_digits(keys[y == label])
    labels = sorted(counts)
    exact = np.array([counts[c] * rows / total for c in labels])
    take = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - take), kind="stable")[: rows - int(take.sum())]:
        take[index] += 1
    wanted = {c: [int(k) - 1] for c, k in zip(labels, take, strict=True) if k > 0}
    found = select_keys(
        lambda: ({c: keys[y == c] for c in wanted} for _, keys, y in keyed([target])), wanted, first=digits
    )
    limits = {c: np.uint64(found[c][0]) for c in wanted}
    parts = []
    for frame, keys, y in keyed():
        keep = np.zeros(len(frame), dtype=bool)
        for c, limit in limits.items():
            keep |= (y == c) & (keys <= limit)
        parts.append(frame.loc[keep])
    sample = pd.concat(parts, ignore_index=True)
    log.info(
        "cross-validation sample: %d of %d rows (%s)", len(sample), total, dict(zip(labels, take.tolist(), strict=True))
    )
    return sample


def as_classifier(params: Params, booster):
    """The XGBClassifier the in-memory fit would have produced, holding `booster`: loaded with the wrapper's
    public load_model, which also reads a few hyper-parameters from the booster (objective, base_score, ...);
    those are set back to the in-memory fit's, so that both models have the same get_params()."""
    model = build_model(params.model, params.train.seed, params.train.n_jobs)
    wanted = model.get_params()
    booster.feature_names = None  # trained on numbered columns, as the in-memory fit's numpy input
    booster.feature_types = None
    model.load_model(booster.save_raw("ubj"))
    loaded = model.get_params()
    model.set_params(**{k: v for k, v in wanted.items() if repr(loaded[k]) != repr(v)})  # repr: `missing` is nan
    return model


def fit_external(params: Params, path: Path, cache: Path):
    """XGBClassifier trained from external memory: `path` read batch by batch into xgboost's quantised pages,
    cached on disk under `cache` (xgboost.DataIter + ExtMemQuantileDMatrix)."""
    import xgboost

    target, batch_rows = params.data.target, params.resources.batch_rows
    cache.mkdir(parents=True, exist_ok=True)

    class Batches(xgboost.DataIter):
        def __init__(self) -> None:
            self._batches = None
            super().__init__(cache_prefix=str(cache / "train"))

        def next(self, input_data) -> bool:
            frame = next(self._batches, None)
            if frame is None:
                return False
            y = frame[target].to_numpy()
            input_data(data=frame.drop(columns=[target]).to_numpy(dtype=np.float32), label=y)
            return True

        def reset(self) -> None:
            self._batches = iter_parquet(path, batch_rows)

    template = build_model(params.model, params.train.seed, params.train.n_jobs)
    batches = Batches()
    batches.reset()
    matrix = xgboost.ExtMemQuantileDMatrix(batches, nthread=params.train.n_jobs)
    log.info("xgboost external memory: %d rows, %d features, pages under %s", matrix.num_row(), matrix.num_col(), cache)
    booster = xgboost.train(
        template.get_xgb_params(), matrix, num_boost_round=template.get_num_boosting_rounds(), verbose_eval=False
    )
    return as_classifier(params, booster)


def fit_dask(params: Params, path: str | Path, address: str):
    """XGBClassifier trained with xgboost.dask on the cluster at `address`, from the parquet file `path`."""
    import dask.dataframe as dd
    import xgboost
    from xgboost import dask as dxgb

    from churn.storage.dask import client, location

    target = params.data.target
    template = build_model(params.model, params.train.seed, params.train.n_jobs)
    with client(address) as dask_client:
        workers = len(dask_client.scheduler_info(n_workers=-1)["workers"])
        frame = dd.read_parquet(location(path))
        features = frame.drop(columns=[target]).astype("float32")
        matrix = dxgb.DaskQuantileDMatrix(dask_client, features, frame[target])
        log.info("xgboost.dask on %s (%d workers): %s", address, workers, location(path))
        output = dxgb.train(
            dask_client, template.get_xgb_params(), matrix, num_boost_round=template.get_num_boosting_rounds()
        )
    booster: xgboost.Booster = output["booster"]
    return as_classifier(params, booster)
