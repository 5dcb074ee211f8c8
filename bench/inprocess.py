"""The one-process baseline: the pipeline's work in one Python process, with no tracking and no DVC.

    python -m bench.inprocess --out DIR     (run in a repository: reads its params.yaml and data.raw_path)

The same library calls as the five stages, on the same data and params: read, validate and clean, split,
featurize, cross-validate, fit, evaluate, gate. Frames stay in memory between steps (no re-reading), and
the stages' outputs (parquet, pickles, JSON, CSV, PNG) are written under DIR, since writing them is part of
the work. Left out: MLflow (store, runs, params, metrics, artifacts, log_model) and DVC. Prints one JSON
line: the time to the end of the imports, then each step's compute and write time, and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from churn.config import Params, load_params
from churn.core import quality
from churn.core.evaluation import classification_metrics, classification_report, confusion, pr_points, roc_points
from churn.core.features import build_preprocessor, raw_feature_importance, transform
from churn.core.models import build_model, iter_cv_folds, single_threaded_blas, summarise_folds
from churn.core.plots import confusion_matrix_figure, curve_figure, feature_importance_figure
from churn.core.schema import clean_table
from churn.core.split import Sides, row_keys
from churn.core.streaming import SeenKeys
from churn.storage.csv_reader import read_raw
from churn.storage.outputs import write_csv_rows, write_figure, write_json, write_pickle
from churn.storage.parquet import write_parquet
from churn.storage.paths import (
    CONFUSION,
    CV_METRICS,
    DATA_QUALITY,
    DECISION,
    FEATURES_TEST,
    FEATURES_TRAIN,
    FIG_CONFUSION,
    FIG_IMPORTANCE,
    FIG_PRC,
    FIG_ROC,
    IMPORTANCE,
    METRICS,
    MODEL,
    PRC,
    PREPARED_TEST,
    PREPARED_TRAIN,
    PREPROCESSOR,
    REPORT,
    ROC,
)
from churn.tracking.registry import gate

PROCESS = psutil.Process()


class Clock:
    """Compute and write seconds per step."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, step: str, kind: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            slot = self.steps.setdefault(step, {"compute": 0.0, "write": 0.0})
            slot[kind] += time.perf_counter() - start


def _import_heavy(params: Params) -> None:
    """Import up front what the steps import lazily, so that imports and compute are told apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import sklearn.model_selection  # noqa: F401

    build_model(params.model, params.train.seed, params.train.n_jobs)  # imports the model family


def run(params: Params, out: Path, clock: Clock) -> dict[str, float]:
    """The work of prepare, featurize, train, evaluate and register's gate; returns the test metrics."""
    data = params.data
    target = data.target

    def dest(path: Path) -> Path:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        return out / path

    with clock("prepare", "compute"):
        raw = read_raw(Path(data.raw_path), data)
        clean, labels = clean_table(raw, data, data.raw_path)
        identity = [*data.features, target]
        repeats = ~SeenKeys().first_seen(row_keys(clean[identity], params.prepare.seed))
        dropped = int(repeats.sum()) if params.prepare.drop_duplicates else 0
        if dropped:
            clean = clean.loc[~repeats].reset_index(drop=True)
        sides = Sides(data, params.prepare, data.raw_path)
        train, test = sides.split(clean)
        sides.check(labels)
        blank = len(raw) - len(clean) - dropped
        counted = sides.rows, sides.positives, sides.test_rows_in_train()
        report = quality.report(len(raw), blank, int(repeats.sum()), dropped, *counted, labels)
    with clock("prepare", "write"):
        write_parquet(train, dest(PREPARED_TRAIN))
        write_parquet(test, dest(PREPARED_TEST))
        write_json(report, dest(DATA_QUALITY))

    with clock("featurize", "compute"):
        preprocessor = build_preprocessor(data, params.featurize).fit(train)
        features_train = transform(preprocessor, train).assign(**{target: train[target].to_numpy()})
        features_test = transform(preprocessor, test).assign(**{target: test[target].to_numpy()})
    with clock("featurize", "write"):
        write_parquet(features_train, dest(FEATURES_TRAIN))
        write_parquet(features_test, dest(FEATURES_TEST))
        write_pickle(preprocessor, dest(PREPROCESSOR))

    with clock("train", "compute"):
        estimator = build_model(params.model, params.train.seed, params.train.n_jobs)
        folds = iter_cv_folds(
            preprocessor,
            estimator,
            train,
            target,
            params.train.cv_folds,
            params.train.seed,
            params.evaluate.threshold,
        )
        summary = summarise_folds(list(folds))
        model = build_model(params.model, params.train.seed, params.train.n_jobs)
        with single_threaded_blas():
            model.fit(features_train.drop(columns=[target]).to_numpy(), features_train[target].to_numpy())
    with clock("train", "write"):
        write_pickle(model, dest(MODEL))
        write_json(summary, dest(CV_METRICS))

    with clock("evaluate", "compute"):
        y_true = features_test[target].to_numpy()
        proba = model.predict_proba(features_test.drop(columns=[target]).to_numpy())[:, 1]
        y_pred = (proba >= params.evaluate.threshold).astype(int)
        metrics = classification_metrics(y_true, proba, params.evaluate.threshold)
        roc, prc = roc_points(y_true, proba), pr_points(y_true, proba)
        importance = raw_feature_importance(preprocessor, model)
        matrix = confusion(y_true, y_pred)
        labels = [f"not {data.positive_label}", str(data.positive_label)]
        report = classification_report(y_true, y_pred, data.positive_label)
    with clock("evaluate", "write"):
        write_json(metrics, dest(METRICS))
        write_json({"roc": roc}, dest(ROC))
        write_json({"prc": prc}, dest(PRC))
        write_csv_rows(["actual", "predicted"], zip(y_true.tolist(), y_pred.tolist(), strict=True), dest(CONFUSION))
        write_json(report, dest(REPORT))
        write_json({k: round(float(v), 6) for k, v in importance.items()}, dest(IMPORTANCE))
        write_figure(confusion_matrix_figure(matrix, labels), dest(FIG_CONFUSION))
        write_figure(feature_importance_figure(importance), dest(FIG_IMPORTANCE))
        roc_title = f"ROC (AUC {metrics['roc_auc']:.3f})"
        write_figure(curve_figure(roc, "fpr", "tpr", roc_title, diagonal=True), dest(FIG_ROC))
        title = f"Precision-recall (AP {metrics['pr_auc']:.3f})"
        write_figure(curve_figure(prc, "recall", "precision", title, diagonal=False), dest(FIG_PRC))

    with clock("register", "compute"):
        decision = gate(metrics, params.register.thresholds)
    with clock("register", "write"):
        write_json(decision, dest(DECISION))
    return metrics


def _age() -> float:
    return time.time() - PROCESS.create_time()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    args = parser.parse_args(argv)
    params = load_params()
    _import_heavy(params)
    imports = _age()
    clock = Clock()
    metrics = run(params, args.out, clock)
    record = {
        "imports": round(imports, 3),
        "steps": {step: {k: round(v, 3) for k, v in kinds.items()} for step, kinds in clock.steps.items()},
        "total": round(_age(), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "roc_auc": metrics["roc_auc"],
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
