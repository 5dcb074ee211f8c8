"""train past resources.external_memory_rows: xgboost from external memory, cross-validation on a stratified
sample; and the choice of that path. The model is the XGBClassifier the default path trains (same class, same
hyper-parameters), so register, evaluate and scoring take it as they take any other.

Cross-validation at this size runs on a stratified sample of resources.cv_sample_rows train rows, in memory,
with the default path's folds (the preprocessor refitted in each fold): five external-memory fits over 4/5
of the split would cost four times the final fit, for a score whose standard error is already about 0.001 of
ROC AUC at a 1M-row sample, while evaluate scores the final model exactly on the whole test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from churn.config import Params
from churn.core.models import build_model
from churn.core.streaming import position_keys, select_keys, top_digits
from churn.errors import ChurnError
from churn.pipeline.batches import iter_parquet, parquet_rows

log = logging.getLogger(__name__)


def external(params: Params, rows: int) -> bool:
    """Whether a train split of `rows` rows takes this path; a family without one is a one-line error."""
    limit = params.resources.external_memory_rows
    if rows <= limit:
        return False
    if params.model.type != "xgboost":
        raise ChurnError(
            f"params.yaml: model.type {params.model.type} trains in memory and the train split has {rows:,} rows, "
            f"past resources.external_memory_rows={limit:,}; use model.type xgboost (trains from external "
            "memory), or raise resources.external_memory_rows if the split fits in memory"
        )
    return True


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
    """The XGBClassifier the default path would have produced, holding `booster`: loaded with the wrapper's
    public load_model, which also reads a few hyper-parameters from the booster (objective, base_score, ...);
    those are set back to the default path's, so that both models have the same get_params()."""
    model = build_model(params.model, params.train.seed, params.train.n_jobs)
    wanted = model.get_params()
    booster.feature_names = None  # trained on numbered columns, as the default path's numpy input
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


class Plan:
    """How train runs off the default path: on a Dask cluster (xgboost and a scheduler configured) and/or from
    external memory (a train split past resources.external_memory_rows)."""

    def __init__(self, params: Params, rows: int) -> None:
        self.params, self.rows = params, rows
        self.external = external(params, rows)
        self.address = params.resources.scheduler() if params.model.type == "xgboost" else ""

    def cv_frame(self, path: Path) -> pd.DataFrame:
        """The prepared rows cross-validation runs on: a stratified sample past the threshold, else all."""
        if self.external:
            return stratified_sample(self.params, path, self.params.resources.cv_sample_rows)
        from churn.pipeline.files import read_parquet

        return read_parquet(path)

    def fit(self, path: Path, scratch: Path):
        """The final model, trained on the featurized split at `path` (scratch: a folder for xgboost's pages)."""
        if self.address:
            from churn.pipeline.large import dask

            return dask.fit(self.params, path, self.address)
        return fit_external(self.params, path, scratch / "xgboost-cache")


def plan(params: Params, features_train: Path) -> Plan | None:
    """The Plan when train leaves the default path, else None (the default path: nothing here is used)."""
    from churn.pipeline.batches import stored_rows

    rows = stored_rows(features_train)
    dask = params.model.type == "xgboost" and params.resources.scheduler()
    if rows <= params.resources.external_memory_rows and not dask:
        return None
    return Plan(params, rows)
