"""Batch scoring: a registered model on a CSV or parquet file of raw rows, ids passed through.

    python -m churn.tools.predict --model models:/churn_model@champion --input FILE --output FILE

The input needs every column of the model's signature (a missing one is a one-line error naming the file
and the column); other columns are ignored, unseen categories are scored like the rare ones. A CSV is read
with params `data.encoding` and `data.separator`, and its rows are cleaned as `prepare` cleans the raw table
(numbers from text, blanks as missing). The output holds the id columns (params `data.id_columns`),
`<target>_probability` and `<target>_label`: the label as the training table spells it (Yes/No, bad/good,
1/0), the positive one when the probability is at least the model's threshold (the `evaluate.threshold` it
was evaluated at; --threshold overrides). CSV or parquet by file suffix; written to a temporary name, then
renamed, so a failure leaves no output.

--explain adds reason_1..reason_3: the raw columns pushing each row's churn odds up the most (`column=value
(+log-odds)`, exact contributions: churn.core.explain; logistic regression and xgboost).

Drift: a model whose metadata carries the train split's profile (the register stage records it) gets each
column's PSI against it in --drift-report (reports/drift.json), a warning for each column above params
`drift.warn_psi`, and with --fail-on-drift exit status 2 when one is above `drift.fail_psi` (the predictions are
written all the same). Rows holding a value training never saw (a number outside the profiled range, an unseen
category) are flagged in the output's `unseen_values` column and counted in the report.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churn.core.schema import clean_features
from churn.errors import ChurnError, DataError
from churn.system import atomic_path, first_line

if TYPE_CHECKING:
    from churn.config import Params
    from churn.tools.settings import DriftSettings

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv",)
DRIFT_REPORT = Path("reports/drift.json")
UNSEEN = "unseen_values"  # the output column flagging rows with a value training never saw
DRIFT_EXIT = 2  # --fail-on-drift: the exit status when a column's PSI is above drift.fail_psi
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


def read_table(path: Path, encoding: str = "utf-8", separator: str = ",") -> pd.DataFrame:
    """A CSV (every column as text, so ids keep leading zeros; read as prepare reads the raw table) or a
    parquet file; a file without rows is an error."""
    from churn.storage.csv_reader import read_csv

    kind = _format(path)
    if not path.exists():
        raise DataError(str(path), "file not found")
    if kind == "csv":
        frame = read_csv(path, encoding, separator)
    else:
        try:
            frame = pd.read_parquet(path, engine="pyarrow")
        except (OSError, ValueError) as exc:  # pyarrow's errors are both
            raise DataError(str(path), f"cannot read as parquet ({first_line(exc)[:200]})") from None
        if frame.empty:
            raise DataError(str(path), "no rows to score")
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


@dataclass(frozen=True)
class Scoring:
    """What turns a model's probabilities into output columns: the input columns, the target's name, its
    labels (negative, positive) as the training table spells them and the threshold of the positive one; and
    how a CSV to score is read (params data.encoding, data.separator)."""

    numerical: list[str]
    categorical: list[str]
    target: str
    labels: tuple[object, object]
    threshold: float
    encoding: str = "utf-8"
    separator: str = ","

    @property
    def required(self) -> list[str]:
        return [*self.numerical, *self.categorical]


def spelled(labels: list[str]) -> tuple[object, object]:
    """Labels as the table spells them: integers when both read as integers ("0", "1"), else the text."""
    if all(re.fullmatch(r"-?[0-9]+", str(label)) for label in labels):
        return tuple(int(label) for label in labels)
    return tuple(str(label) for label in labels)


def scoring_of(model, params: Params, threshold: float | None = None) -> Scoring:
    """The model's own target, labels and threshold (its metadata, written by the register stage); a model
    registered before they were recorded falls back to params.yaml and labels 0 and 1."""
    metadata = model.metadata.metadata or {}
    numerical, categorical = model_columns(model, params)
    return Scoring(
        numerical=numerical,
        categorical=categorical,
        target=metadata.get("target", params.data.target),
        labels=spelled(metadata["labels"]) if len(metadata.get("labels") or []) == 2 else (0, 1),
        threshold=threshold if threshold is not None else metadata.get("threshold", params.evaluate.threshold),
        encoding=params.data.encoding,
        separator=params.data.separator,
    )


def score(features: pd.DataFrame, ids: pd.DataFrame, model, scoring: Scoring) -> pd.DataFrame:
    """`ids` with the probability and the label of each row of the cleaned `features`."""
    proba = np.asarray(model.predict(features), dtype="float64")
    proba = proba[:, 1] if proba.ndim == 2 else proba
    prob_col, label_col = output_columns(scoring.target)
    negative, positive = scoring.labels
    label = pd.Series(np.where(proba >= scoring.threshold, 1, 0)).map({0: negative, 1: positive})
    return ids.reset_index(drop=True).assign(**{prob_col: proba, label_col: label})


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


REASONS = 3  # --explain: reasons per row


def reasons(model, features: pd.DataFrame) -> pd.DataFrame:
    """reason_1..reason_3 of each row (churn.core.explain), from the logged pipeline and its recorded means."""
    from churn.core.explain import contributions, top_reasons

    pipeline = model.get_raw_model()
    reference = (model.metadata.metadata or {}).get("feature_means")
    contrib = contributions(pipeline["preprocess"], pipeline["model"], features, reference)
    return top_reasons(contrib, features.reset_index(drop=True), REASONS)


class DriftFailure(ChurnError):
    """A scored batch drifted past drift.fail_psi (predict --fail-on-drift)."""


def check_drift(profile: dict, features: pd.DataFrame, source: str, limits: DriftSettings, path: Path):
    """The batch's drift against the model's training profile, written to `path` with the columns above each
    limit (`warn`, `fail`), one warning per column above drift.warn_psi; returns (report, per-row unseen flag)."""
    import json

    from churn.core.drift import drift

    report, unseen = drift(profile, features, source)
    report["warn_psi"], report["fail_psi"] = limits.warn_psi, limits.fail_psi
    report["warn"] = [name for name, c in report["columns"].items() if c["psi"] > limits.warn_psi]
    report["fail"] = [name for name, c in report["columns"].items() if c["psi"] > limits.fail_psi]
    for name in report["warn"]:
        column = report["columns"][name]
        log.warning(
            "drift: %s PSI %.3f above drift.warn_psi %g (%d unseen values)",
            name,
            column["psi"],
            limits.warn_psi,
            column["unseen"],
        )
    if report["unseen_rows"]:
        log.warning(
            "drift: %d of %d rows hold a value training never saw (column %s)",
            report["unseen_rows"],
            report["rows"],
            UNSEEN,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s (%d columns, %d above warn_psi)", path, len(report["columns"]), len(report["warn"]))
    return report, unseen


def run(
    params: Params,
    model_uri: str,
    source: Path,
    target: Path,
    threshold: float | None = None,
    limits: DriftSettings | None = None,
    drift_path: Path = DRIFT_REPORT,
    fail_on_drift: bool = False,
    explain: bool = False,
) -> pd.DataFrame:
    """Score `source` into `target`; with `limits` and a model that carries a training profile, measure drift
    (check_drift) and, with `fail_on_drift`, raise DriftFailure after writing the outputs."""
    data = params.data
    frame = read_table(source, data.encoding, data.separator)
    model = load_model(model_uri, params.mlflow.tracking_uri)
    scoring = scoring_of(model, params, threshold)
    schema = model.metadata.get_input_schema()
    required = schema.required_input_names() if schema is not None else scoring.required
    check_columns(frame, list(required), str(source), f"the model's signature ({model_uri})")
    check_columns(frame, list(data.id_columns), str(source), "data.id_columns in params.yaml")
    features = clean_features(frame, scoring.numerical, scoring.categorical, str(source))
    profile = (model.metadata.metadata or {}).get("profile")
    report = unseen = None
    if limits is not None and profile:
        report, unseen = check_drift(profile, features, str(source), limits, drift_path)
    elif limits is not None:
        log.warning("%s carries no training profile (registered before drift checks): drift not measured", model_uri)
    from mlflow.exceptions import MlflowException

    scorer = model
    if params.resources.scheduler():  # on the Dask cluster (imported only then)
        from churn.tools.dask_scoring import DaskScorer

        scorer = DaskScorer(model, params.resources.scheduler())
    try:
        scored = score(features, frame[list(data.id_columns)], scorer, scoring)
    except MlflowException as exc:  # the signature refused a value
        raise DataError(str(source), f"rejected by the model's signature: {first_line(exc)[:300]}") from None
    if unseen is not None:
        scored = scored.assign(**{UNSEEN: unseen})
    if explain:
        scored = scored.join(reasons(model, features))
    write_table(scored, target)
    prob_col, label_col = output_columns(scoring.target)
    log.info(
        "scored %d rows with %s: mean %s %.4f, %d labelled %s at threshold %g",
        len(scored),
        model_uri,
        prob_col,
        float(scored[prob_col].mean()),
        int((scored[label_col] == scoring.labels[1]).sum()),
        scoring.labels[1],
        scoring.threshold,
    )
    if fail_on_drift and report is not None and report["fail"]:
        worst = max(report["fail"], key=lambda name: report["columns"][name]["psi"])
        raise DriftFailure(
            f"{source}: {len(report['fail'])} column(s) drifted past drift.fail_psi {report['fail_psi']:g} "
            f"({worst} PSI {report['columns'][worst]['psi']:.3f}; see {drift_path})"
        )
    return scored


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    parser = argparse.ArgumentParser(prog="python -m churn.tools.predict", description="Score a CSV or parquet file.")
    parser.add_argument("--model", help="model URI (default: models:/<register.model_name>@champion)")
    parser.add_argument("--input", required=True, type=Path, help="CSV or parquet file of raw rows")
    parser.add_argument("--output", required=True, type=Path, help="CSV or parquet file to write")
    parser.add_argument("--threshold", type=float, help="label threshold (default: the model's evaluate.threshold)")
    parser.add_argument("--params", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    parser.add_argument("--explain", action="store_true", help=f"add each row's top {REASONS} reasons")
    parser.add_argument("--drift-report", default=DRIFT_REPORT, type=Path, help=f"default: {DRIFT_REPORT}")
    parser.add_argument(
        "--fail-on-drift", action="store_true", help=f"exit {DRIFT_EXIT} when a column's PSI is above drift.fail_psi"
    )
    args = parser.parse_args(argv)

    def _main() -> None:
        import sys

        from churn.tools.settings import drift_settings, load

        params, raw = load(args.params)
        limits = drift_settings(raw, str(args.params))
        model_uri = args.model or f"models:/{params.register.model_name}@champion"
        if args.threshold is not None and not 0 < args.threshold < 1:
            raise ChurnError(f"--threshold must be in (0, 1), got {args.threshold}")
        _format(args.output)  # fail before loading the model
        try:
            drift = {"limits": limits, "drift_path": args.drift_report, "fail_on_drift": args.fail_on_drift}
            run(params, model_uri, args.input, args.output, args.threshold, **drift, explain=args.explain)
        except DriftFailure as exc:
            log.error("%s", exc)
            sys.exit(DRIFT_EXIT)

    run_cli(_main)


if __name__ == "__main__":
    main()
