"""Scoring on a Dask cluster for churn.tools.predict (a scheduler in params resources.dask_scheduler or
DASK_SCHEDULER_ADDRESS): the cleaned rows go to the cluster in partitions, each worker applies the model's
preprocessing to its own, and xgboost.dask predicts. Imported only when a scheduler is configured."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from churn.errors import ChurnError

log = logging.getLogger(__name__)

PARTITION_ROWS = 1_000_000


class DaskScorer:
    """Stands in for the pyfunc model: `predict(features)` -> the positive class's probability per row."""

    def __init__(self, model, address: str) -> None:
        self.pipeline = model.get_raw_model()
        self.address = address
        estimator = self.pipeline.named_steps["model"]
        if not hasattr(estimator, "get_booster"):
            raise ChurnError(
                f"Dask scoring (scheduler {address}) runs xgboost models; this model is {type(estimator).__name__}: "
                "clear resources.dask_scheduler and DASK_SCHEDULER_ADDRESS to score it in this process"
            )

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        import dask.dataframe as dd
        from xgboost import dask as dxgb

        from churn.storage.dask import client

        preprocessor = self.pipeline.named_steps["preprocess"]
        booster = self.pipeline.named_steps["model"].get_booster()
        names = [str(n) for n in preprocessor.get_feature_names_out()]

        def transform(part: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame(preprocessor.transform(part), columns=names, index=part.index).astype("float32")

        with client(self.address) as dask_client:
            workers = max(len(dask_client.scheduler_info(n_workers=-1)["workers"]), 1)
            partitions = max(workers, -(-len(features) // PARTITION_ROWS))
            rows = dd.from_pandas(features, npartitions=min(partitions, max(len(features), 1)))
            meta = pd.DataFrame({n: pd.Series(dtype="float32") for n in names})
            matrix = rows.map_partitions(transform, meta=meta).to_dask_array(lengths=True)
            proba = dxgb.inplace_predict(dask_client, booster, matrix).compute()
        log.info("scored %d rows on the Dask cluster %s (%d workers)", len(features), self.address, workers)
        return np.asarray(proba, dtype="float64")
