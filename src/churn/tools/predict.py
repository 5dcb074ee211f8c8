"""Batch scoring: a registered model on a CSV or parquet file of raw rows, ids passed through.

    python -m churn.tools.predict --model models:/churn_model@champion --input FILE --output FILE

The input needs every column of the model's signature (a missing one is a one-line error naming the file
and the column); other columns are ignored, unseen categories are scored like the rare ones. Rows are cleaned
as `prepare` cleans the raw table (numbers from text, blanks as missing). The output holds the id columns
(params `data.id_columns`), `<target>_probability` and `<target>_label` (1 when the probability is at least
params `evaluate.threshold`, i.e. the model predicts `data.positive_label`). CSV or parquet by file suffix;
written to a temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn.core.schema import clean_features
from churn.errors import ChurnError, DataError
from churn.system import atomic_path

if TYPE_CHECKING:
    from churn.config import Params

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


def output_columns(target: str) -> tuple[str, str]:
    """The names of the probability and label columns for a target column."""
    return f"{target}_probability", f"{target}_label"


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ChurnError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .csv or .parquet")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (every column as text, so ids keep leading zeros) or a parquet file."""
    kind = _format(path)
    if not path.exists():
        raise DataError(str(path), "file not found")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path, engine="pyarrow")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(str(path), f"cannot read as {kind} ({first})") from None
    log.info("read %s (%d rows)", path, len(frame))
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write next to `path` under a temporary name, then rename: a reader never sees half a file."""
    kind = _format(path)
    with atomic_path(path) as tmp:
        if kind == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, engine="pyarrow", index=False)
    log.info("wrote %s (%d rows)", path, len(frame))


def check_columns(frame: pd.DataFrame, required: list[str], source: str, what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(source, f"missing column {missing[0]!r}{more} required by {what}")


def score(features: pd.DataFrame, ids: pd.DataFrame, model, target: str, threshold: float) -> pd.DataFrame:
    """`ids` with the probability and the label at `threshold` of each row of the cleaned `features`."""
    proba = np.asarray(model.predict(features), dtype="float64")
    proba = proba[:, 1] if proba.ndim == 2 else proba
    prob_col, label_col = output_columns(target)
    return ids.reset_index(drop=True).assign(**{prob_col: proba, label_col: (proba >= threshold).astype("int64")})


def load_model(uri: str, configured_uri: str = ""):
    """A pyfunc model from `uri` (models:/name@alias, models:/name/version, runs:/..., a path)."""
    import mlflow

    from churn.tracking.store import redact, tracking_uri

    store = tracking_uri(configured=configured_uri)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # noqa: BLE001 - a bad URI, a missing alias or an unreachable store
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ChurnError(f"{uri}: cannot load the model from {redact(store)} ({first[:300]})") from None


def model_columns(model, params: Params) -> tuple[list[str], list[str]]:
    """(numerical, categorical) input columns: the model's metadata, else its signature's types."""
    metadata = model.metadata.metadata or {}
    if "numerical" in metadata and "categorical" in metadata:
        return list(metadata["numerical"]), list(metadata["categorical"])
    schema = model.metadata.get_input_schema()
    if schema is None:
        return list(params.data.numerical), list(params.data.categorical)
    numerical, categorical = [], []
    for spec in schema.inputs:
        (categorical if getattr(spec.type, "name", "") == "string" else numerical).append(spec.name)
    return numerical, categorical


def run(params: Params, model_uri: str, source: Path, target: Path, threshold: float | None = None) -> pd.DataFrame:
    data = params.data
    threshold = params.evaluate.threshold if threshold is None else threshold
    frame = read_table(source)
    model = load_model(model_uri, params.mlflow.tracking_uri)
    numerical, categorical = model_columns(model, params)
    schema = model.metadata.get_input_schema()
    required = schema.required_input_names() if schema is not None else [*numerical, *categorical]
    check_columns(frame, list(required), str(source), f"the model's signature ({model_uri})")
    check_columns(frame, list(data.id_columns), str(source), "data.id_columns in params.yaml")
    features = clean_features(frame, numerical, categorical, str(source))
    from mlflow.exceptions import MlflowException

    try:
        scored = score(features, frame[list(data.id_columns)], model, data.target, threshold)
    except MlflowException as exc:  # the signature refused a value
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(str(source), f"rejected by the model's signature: {first[:300]}") from None
    write_table(scored, target)
    prob_col, label_col = output_columns(data.target)
    log.info(
        "scored %d rows with %s: mean %s %.4f, %d labelled 1 at threshold %g",
        len(scored),
        model_uri,
        prob_col,
        float(scored[prob_col].mean()) if len(scored) else float("nan"),
        int(scored[label_col].sum()),
        threshold,
    )
    return scored


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.config import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tools.predict", description="Score a CSV or parquet file.")
    parser.add_argument("--model", help="model URI (default: models:/<register.model_name>@champion)")
    parser.add_argument("--input", required=True, type=Path, help="CSV or parquet file of raw rows")
    parser.add_argument("--output", required=True, type=Path, help="CSV or parquet file to write")
    parser.add_argument("--threshold", type=float, help="label threshold (default: evaluate.threshold)")
    parser.add_argument("--params", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)

    def _main() -> None:
        params = load_params(args.params)
        model_uri = args.model or f"models:/{params.register.model_name}@champion"
        if args.threshold is not None and not 0 < args.threshold < 1:
            raise ChurnError(f"--threshold must be in (0, 1), got {args.threshold}")
        _format(args.output)  # fail before loading the model
        run(params, model_uri, args.input, args.output, args.threshold)

    run_cli(_main)


if __name__ == "__main__":
    main()
