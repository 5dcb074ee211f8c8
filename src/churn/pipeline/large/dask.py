"""xgboost on a Dask cluster (params resources.dask_scheduler, else DASK_SCHEDULER_ADDRESS): train with
xgboost.dask, whose workers read the same parquet files (the repository on a filesystem every worker mounts
at the same path, or an S3 URL), and scoring of raw rows with a registered model. Imported only when a
scheduler is configured: without one, nothing of Dask is imported.
"""

from __future__ import annotations

import logging
from pathlib import Path

from churn.config import Params
from churn.errors import ChurnError

log = logging.getLogger(__name__)


def _location(path: str | Path) -> str:
    """An absolute path (the workers resolve it on their filesystem) or a URL as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def client(address: str):
    """A distributed.Client of the scheduler at `address`; an unreachable one is a one-line error."""
    from distributed import Client

    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ChurnError(
            f"Dask scheduler {address}: not reachable ({exc}); check resources.dask_scheduler or DASK_SCHEDULER_ADDRESS"
        ) from None


def fit(params: Params, path: str | Path, address: str):
    """XGBClassifier trained with xgboost.dask on the cluster at `address`, from the parquet file `path`."""
    import dask.dataframe as dd
    import xgboost
    from xgboost import dask as dxgb

    from churn.core.models import build_model
    from churn.pipeline.large.train import as_classifier

    target = params.data.target
    template = build_model(params.model, params.train.seed, params.train.n_jobs)
    with client(address) as dask_client:
        workers = len(dask_client.scheduler_info(n_workers=-1)["workers"])
        frame = dd.read_parquet(_location(path))
        features = frame.drop(columns=[target]).astype("float32")
        matrix = dxgb.DaskQuantileDMatrix(dask_client, features, frame[target])
        log.info("xgboost.dask on %s (%d workers): %s", address, workers, _location(path))
        output = dxgb.train(
            dask_client, template.get_xgb_params(), matrix, num_boost_round=template.get_num_boosting_rounds()
        )
    booster: xgboost.Booster = output["booster"]
    return as_classifier(params, booster)
