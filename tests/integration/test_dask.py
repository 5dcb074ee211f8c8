"""xgboost on a Dask cluster (a LocalCluster of 2 worker processes): train with resources.dask_scheduler fits with
xgboost.dask from the same parquet files, its test metrics are within 1e-3 of the single-process fit's, and the
model is registered and scored like any other. Without a scheduler, nothing of Dask is imported.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pandas as pd
import pytest

from churn.config import load_params
from churn.core.generate import generate
from churn.pipeline import evaluate, featurize, prepare, register, train
from churn.storage.outputs import read_pickle
from tests.conftest import REPO

ROWS = 20_000


def test_pipeline_imports_no_dask_without_a_scheduler():
    script = (
        "import sys\n"
        "import churn.pipeline.prepare, churn.pipeline.featurize, churn.pipeline.train, churn.pipeline.evaluate\n"
        "import churn.pipeline.register, churn.pipeline.scale\n"
        "from churn.config import load_params\n"
        "params = load_params()\n"
        "assert not params.resources.scheduler()\n"
        "from churn.pipeline.train import mode\n"
        "assert mode(params, 1000) == ('memory', '')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_xgboost_on_a_dask_cluster_matches_one_process(tmp_path, monkeypatch, params_raw, caplog):
    from distributed import LocalCluster

    from tests.conftest import _make_workspace

    params_raw["model"]["type"] = "xgboost"
    root = _make_workspace(tmp_path, monkeypatch, params_raw, generate(ROWS, seed=11))
    params = load_params()
    for stage in (prepare, featurize, train, evaluate):
        stage.run(params)
    local_metrics = json.loads((root / "reports" / "metrics.json").read_text())
    local_model = read_pickle(root / "models" / "model.pkl")

    raw = pd.read_csv(root / "data" / "raw" / "customers.csv", dtype=str, keep_default_na=False).head(300)
    raw.to_csv(root / "to-score.csv", index=False)
    from churn.tools import predict

    caplog.set_level(logging.INFO, logger="churn.tools.dask_scoring")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("CHURN_PIPELINE_KEY", "on-dask")
        resources = params.resources.model_copy(update={"dask_scheduler": cluster.scheduler_address})
        on_dask = params.model_copy(update={"resources": resources})
        train.run(on_dask)
        dask_model = read_pickle(root / "models" / "model.pkl")
        assert type(dask_model) is type(local_model)
        assert dask_model.get_booster().num_boosted_rounds() == local_model.get_booster().num_boosted_rounds()
        evaluate.run(on_dask)
        dask_metrics = json.loads((root / "reports" / "metrics.json").read_text())
        for name, value in local_metrics.items():
            assert abs(dask_metrics[name] - value) <= 1e-3, (name, value, dask_metrics[name])

        # registered like any other model, and scored on the cluster by churn.tools.predict
        register.run(on_dask)
        decision = json.loads((root / "reports" / "register.json").read_text())
        assert decision["passed"], decision
        uri = f"models:/{params.register.model_name}@champion"
        on_cluster = predict.run(on_dask, uri, root / "to-score.csv", root / "on-dask.csv")
        assert "on the Dask cluster" in caplog.text
    in_process = predict.run(params, uri, root / "to-score.csv", root / "in-process.csv")
    pd.testing.assert_frame_equal(on_cluster, in_process, check_exact=False, rtol=1e-6)
    assert len(in_process) == 300
