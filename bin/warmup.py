"""The warm-up of the stage server (warmfork, src/warmfork): run once in the server before it forks stages.

bin/py names this file in WARMFORK_WARMUP; the server key includes its content, so editing it starts a
new server. It imports what the stages import from the libraries and uses each once on a few rows, so that
a stage forked from the server pays neither. The project's own code (src/churn) is never imported here: a
stage loads it from its own checkout. Nothing here may start a thread (the server forks), nor configure
logging. Its output goes to the server's log.
"""

import importlib
import os

# As churn.cli sets them before MLflow is imported (MLflow reads both at import). With telemetry on, MLflow
# starts a thread at import, and a server with threads refuses to serve.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Third-party modules the stages import (names that no longer exist are reported and skipped).
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "yaml",
    "psutil",
    "filelock",
    "threadpoolctl",
    "pydantic",
    "sklearn.base",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "xgboost",
    "skops.io",
    "sqlalchemy",
    "mlflow",
    "mlflow.entities",
    "mlflow.exceptions",
    "mlflow.data.dataset_source_registry",
    "mlflow.data.pandas_dataset",
    "mlflow.models",
    "mlflow.sklearn",
    "mlflow.types.schema",
    "mlflow.tracking.context.registry",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
    # What MLflow imports lazily when a stage opens the store, starts a run, logs a dataset or a model,
    # and pyarrow's reader modules.
    "git",
    "alembic.command",
    "alembic.config",
    "sqlalchemy.dialects.sqlite",
    "narwhals",
    "opentelemetry.sdk.metrics",
    "mlflow.pyfunc",
    "mlflow.tracing.export",
    "mlflow.tracing.processor",
    "mlflow.tracing.utils.environment",
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.store.model_registry.sqlalchemy_workspace_store",
    "mlflow.models.display_utils",
    "mlflow.types.responses",
    "mlflow.utils.spark_utils",
    "pyarrow.csv",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
    "pandas.core.arrays.arrow.extension_types",
    "pandas.core.methods.to_dict",
)
# Caches that depend only on the installed packages (the server key includes site-packages' mtime): MLflow
# maps every installed module to its distribution (0.35 s) whenever a model is logged with pip
# requirements; Pillow registers its image plugins on first use (matplotlib's savefig).
CACHES = (
    ("mlflow.utils.requirements_utils", "_init_packages_to_modules_map"),
    ("PIL.Image", "init"),
)


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def exercise_store() -> None:
    """MLflow's store code paths and SQLAlchemy's mapper configuration, on a throwaway sqlite store."""
    import shutil
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    directory = tempfile.mkdtemp(prefix="warmup-store-")
    client = None
    try:
        client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
        experiment = client.create_experiment("warm", artifact_location=Path(directory, "artifacts").as_uri())
        client.get_experiment_by_name("warm")
        run = client.create_run(experiment, tags={"warm": "1"})
        items = {"metrics": [Metric("m", 1.0, 0, 0)], "params": [Param("p", "1")], "tags": [RunTag("t", "1")]}
        client.log_batch(run.info.run_id, **items)
        client.search_runs([experiment], filter_string="tags.`warm` = '1'", max_results=1)
        client.set_terminated(run.info.run_id, "FINISHED")
        client.search_registered_models(max_results=1)
        client.create_registered_model("warm")
        client.set_registered_model_tag("warm", "t", "1")
        source = Path(directory, "artifacts", "model").as_uri()
        version = client.create_model_version("warm", source, run_id=run.info.run_id)
        client.set_registered_model_alias("warm", "champion", version.version)
        client.get_model_version_by_alias("warm", "champion")
        client.search_model_versions("name = 'warm'", max_results=10)
        client.get_registered_model("warm")
    finally:
        if client is not None:  # no connection may cross the fork
            stores = [client._tracking_client.store, client._get_registry_client().store]
            for engine in {id(e): e for e in (getattr(store, "engine", None) for store in stores) if e}.values():
                engine.dispose()
        shutil.rmtree(directory, ignore_errors=True)


def frame():
    import pandas as pd

    return pd.DataFrame(
        {"x": [1.0, None, 3.0, 4.0, 5.0, 6.0], "c": ["a", "b", None, "a", "b", "a"], "y": [0, 1, 0, 1, 0, 1]}
    )


def exercise_tables() -> None:
    """pyarrow and pandas conversions, parquet and CSV (on the calling thread: pq.read_table starts threads)."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame(), preserve_index=False, nthreads=1), sink, compression="snappy")
    parquet = pq.ParquetFile(pa.BufferReader(sink.getvalue()), pre_buffer=False)
    back = parquet.read(use_threads=False).to_pandas(use_threads=False)
    pd.read_csv(io.StringIO(back.to_csv(index=False)), dtype=str).isna().any()


def exercise_sklearn() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_curve, roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    table = frame()
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [("impute", SimpleImputer(strategy="most_frequent")), ("encode", OneHotEncoder(handle_unknown="ignore"))]
    )
    features = ColumnTransformer([("num", numeric, ["x"]), ("cat", categorical, ["c"])]).fit_transform(table)
    model = LogisticRegression().fit(features, table["y"])
    scores = model.predict_proba(features)[:, 1]
    list(StratifiedKFold(n_splits=2).split(features, table["y"]))
    roc_auc_score(table["y"], scores), log_loss(table["y"], scores), confusion_matrix(table["y"], scores > 0.5)
    roc_curve(table["y"], scores), precision_recall_curve(table["y"], scores)


def exercise_plots() -> None:
    import io

    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [0, 1], label="line")
    axes.set_title("warm")
    axes.legend()
    figure.tight_layout()
    figure.savefig(io.BytesIO(), format="png", dpi=40)
    plt.close(figure)


def warm_up() -> None:
    import matplotlib

    matplotlib.use("Agg")  # what churn.core.plots selects; importing pyplot then never probes for a display
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a stage then pays that import itself
            print(f"warm-up: import {name} failed: {exc}")  # noqa: T201 - the server's log
    for module, function in CACHES:
        try:
            getattr(importlib.import_module(module), function)()
        except Exception as exc:  # noqa: BLE001 - the stage fills the cache itself
            print(f"warm-up: {module}.{function} failed: {exc}")  # noqa: T201
    # A stage's first use of each library in a fresh process took 0.1-0.2 s longer than its second.
    for exercise in (exercise_store, exercise_tables, exercise_sklearn, exercise_plots):
        before = native_threads()
        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - a stage then pays that first use itself
            print(f"warm-up: {exercise.__name__} failed: {exc}")  # noqa: T201
        if native_threads() > before:
            raise RuntimeError(f"{exercise.__name__} started a thread")

    import numpy

    # A fresh interpreter seeds numpy's global generator from the OS; forked stages would share the server's.
    os.register_at_fork(after_in_child=numpy.random.seed)


warm_up()
