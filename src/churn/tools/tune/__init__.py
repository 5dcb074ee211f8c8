"""tune: an Optuna study over one model family's hyper-parameters, scored exactly as the train stage scores.

in: data/prepared/train.parquet, models/preprocessor.pkl (the featurize outputs; run `make run` first)
out: tune.best_params (default tune/best_params.json); with --apply, a DVC experiment | params: tune, model, train

The objective is the cross-validated `tune.metric` on the train split, through the train stage's own code
path (`churn.core.models.iter_cv_folds` with train.cv_folds, train.seed, evaluate.threshold), so applying the best
trial with `dvc exp run -S ...` reproduces its CV score. Each fold is reported to a median pruner.
The study lives in an Optuna storage (sqlite under the repository root by default, or PostgreSQL shared by
workers on several machines); re-running continues it. MLflow gets one parent run per study and one nested
run per trial.

Workers: `--workers N` starts N processes of this tool on one study; the same command on other hosts (a clone
at the same commit, with the same data) joins it. A run ends when the study has `--trials` more finished
trials than when it started, whoever runs them. Workers send heartbeats to the storage; a worker that stops
sending them (killed, crashed, host lost) has its trial failed and queued again by the others, and that
trial's MLflow run ended FAILED. Usage: `python -m churn.tools.tune [--trials N] [--timeout S] [--storage URL]
[--study NAME] [--family F] [--workers N] [--apply]`.

Modules, in import order (each uses only those before it): storage (the Optuna storage: URL, heartbeats,
lock), search (the tune block resolved, the space, the seeded sampler), study (one study per data, runs shared by
workers, stale trials), mlflow_runs (a parent run per study, a nested run per trial), objective (a trial scored as
train scores it), results (the best parameters, the parent's summary and plots), apply (the best as a DVC
experiment), worker (one worker's run), local_workers (N processes on one study), cli (the command; __main__ runs
it).
"""
