"""`python -m churn.tools.tune` in a temporary git+DVC repository: a study continued across runs, tracked in MLflow,
applied as a DVC experiment, run by two local workers (`--workers 2`) on a real PostgreSQL. Workers in several
clones, one of them killed, are in test_tune_workers.py."""

from __future__ import annotations

import json

import optuna
import pytest

from churn.tracking.store import redact
from tests.integration.helpers import DVC, PYTHON, exp_show, make_repo, mlflow_runs, run
from tests.integration.services import optuna_storage, postgres_database

pytestmark = pytest.mark.slow
STUDY = "churn-logistic_regression-roc_auc"
# Cheap trials: logistic regression, 3 folds (make_repo), a pruner that may stop a trial after any fold.
TUNE = [PYTHON, "-m", "churn.tools.tune", "--no-progress", "--family", "logistic_regression"]
TUNE_PARAMS = {"pruner": {"n_startup_trials": 2, "n_warmup_steps": 0}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("tune") / "repo", rows=500, params={"tune": TUNE_PARAMS})
    run([PYTHON, "-m", "churn.tools.store", "init"], root)
    run([*DVC, "repro", "featurize"], root)  # tuning needs only the featurize outputs
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "featurized"], root)
    return root


def study_runs(root, study: str):
    """(the study's MLflow parent runs, their trial runs)."""
    runs = mlflow_runs(root)
    parents = [r for r in runs if r.data.tags.get("churn.role") == "study" and r.data.tags["optuna.study"] == study]
    ids = {p.info.run_id for p in parents}
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    return parents, trials


def check_trials_match_mlflow(study: optuna.Study, trials) -> None:
    by_number = {int(r.data.tags["optuna.trial"]): r for r in trials}
    assert sorted(by_number) == [t.number for t in study.trials]
    for trial in study.trials:
        logged = by_number[trial.number]
        assert logged.data.tags["optuna.state"] == trial.state.name
        assert logged.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[trial.state.name]
        assert logged.data.params["model.C"] == str(trial.params["model.C"])
        assert "fold_roc_auc" in logged.data.metrics  # fold scores (steps 0..), also for pruned trials
        if trial.state.name == "COMPLETE":
            assert logged.data.metrics["cv_roc_auc"] == trial.value
            assert len(trial.intermediate_values) == 3


def test_ten_trials_then_five_more_continue_one_study(repo):
    first = run([*TUNE, "--trials", "10"], repo)
    storage = f"sqlite:///{repo / 'optuna.db'}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 10, first.stderr[-2000:]
    parents, trials = study_runs(repo, STUDY)
    assert len(parents) == 1
    assert len(trials) == 10
    check_trials_match_mlflow(study, trials)

    run([*TUNE, "--trials", "5"], repo)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.number for t in study.trials] == list(range(15))
    parents, trials = study_runs(repo, STUDY)
    assert len(parents) == 1, "a continued study keeps its parent run"
    assert len(trials) == 15
    check_trials_match_mlflow(study, trials)
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") >= 1, states  # fixed seeds: the pruner stops some trials early
    assert states.count("COMPLETE") >= 2

    parent = parents[0]
    assert parent.data.metrics["best_cv_roc_auc"] == study.best_value
    assert parent.data.tags["best.trial"] == str(study.best_trial.number)
    assert parent.data.tags["optuna.storage"] == storage
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("optimization_history", "param_importances", "parallel_coordinate")}

    best = json.loads((repo / "tune" / "best_params.json").read_text())
    assert best["trial"] == study.best_trial.number
    assert best["value"] == study.best_value
    assert best["params"] == {"model.type": "logistic_regression", "model.C": study.best_params["model.C"]}


def test_apply_runs_the_best_trial_as_a_dvc_experiment_with_the_same_cv_score(repo):
    best = json.loads((repo / "tune" / "best_params.json").read_text())
    result = run([*TUNE, "--trials", "0", "--apply"], repo)
    name = result.stdout.strip().splitlines()[-1]

    exps = [e for base in exp_show(repo) for e in base.get("experiments") or [] if e.get("name") == name]
    assert exps, f"no experiment {name!r} in dvc exp show"
    data = exps[0]["revs"][0]["data"]
    params = data["params"]["params.yaml"]["data"]
    assert params["model"]["type"] == "logistic_regression"
    assert params["model"]["C"] == best["params"]["model.C"]  # exactly: the value round-trips through -S
    cv = data["metrics"]["reports/cv_metrics.json"]["data"]["roc_auc"]
    assert round(cv, 6) == round(best["value"], 6)
    # it went through the whole rest of the pipeline, as any experiment does
    assert "roc_auc" in data["metrics"]["reports/metrics.json"]["data"]
    assert json.loads((repo / "reports" / "register.json").read_text())


def test_unreachable_storage_is_one_line_naming_the_redacted_url(repo):
    result = run([*TUNE, "--storage", "postgresql+psycopg2://tuner:hunter2@127.0.0.1:1/optuna"], repo, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: cannot open the Optuna storage postgresql+psycopg2://tuner:***@127.0.0.1:1/optuna"
    )
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_changed_cv_settings_do_not_silently_continue_a_study(repo):
    """A study records what its scores depend on; continuing it under other CV folds is refused."""
    import yaml

    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train"]["cv_folds"] = 4
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = run([*TUNE, "--trials", "1"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode == 1
    assert f"error: study '{STUDY}'" in result.stderr
    assert "train.cv_folds=3, now 4" in result.stderr


# --- PostgreSQL: two workers, one study ----------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(postgres_server):
    """A fresh database on the session's PostgreSQL server (dropped afterwards), as a SQLAlchemy URL."""
    with postgres_database(postgres_server, "tune") as url:
        yield url


@pytest.mark.postgres
def test_two_local_workers_share_one_run_of_one_study_on_postgresql(repo, postgres_url):
    """`--workers 2`: two processes on one study, which between them add the requested trials."""
    command = [*TUNE, "--storage", postgres_url, "--study", "shared", "--trials", "20", "--workers", "2"]
    result = run(command, repo, timeout=600)

    with optuna_storage(postgres_url) as storage:  # the study's reads below, on one pool closed at the end
        study = optuna.load_study(study_name="shared", storage=storage)
        numbers = [t.number for t in study.trials]
        assert sorted(numbers) == list(range(len(numbers))), "no duplicate or missing trial numbers"
        finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        # Workers stop once the study has the trials asked for, counting those running: at most one more when
        # both ask for a trial at the same moment.
        assert 20 <= len(finished) <= 21, result.stderr[-3000:]
        assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
        proposals = [t.params["model.C"] for t in study.trials]
        assert len(set(proposals)) == len(proposals), "workers proposed the same parameters (sampler seeded per trial)"

        parents, trials = study_runs(repo, "shared")
        assert len(parents) == 1, "both workers log under one parent run"
        assert parents[0].info.status == "FINISHED"
        assert parents[0].data.tags["optuna.storage"] == redact(postgres_url)
        assert "***" in redact(postgres_url)
        check_trials_match_mlflow(study, trials)
        workers = {(r.data.tags["optuna.worker.host"], r.data.tags["optuna.worker.pid"]) for r in trials}
        assert len(workers) == 2, "both workers ran trials"
        assert {r.data.tags["optuna.worker"] for r in trials} == {f"{host}:{pid}" for host, pid in workers}
        best = json.loads((repo / "tune" / "best_params.json").read_text())
        assert (best["study"], best["trial"], best["value"]) == ("shared", study.best_trial.number, study.best_value)


def test_workers_need_a_database_server(repo):
    result = run([*TUNE, "--trials", "2", "--workers", "2"], repo, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: --workers 2 needs a study on a database server, not sqlite:///")
    assert "STORAGE=postgresql+psycopg2://" in errors[0]
