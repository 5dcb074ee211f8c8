"""The tune block of params.yaml (churn.tools.settings): search spaces and their validation against each family's own
hyper-parameter model; then the tuning tool's trial -> params mapping, storage and sampler (churn.tools.tune)."""

from __future__ import annotations

import optuna
import pytest

from churn.config import parse_params
from churn.errors import ChurnError, ParamError
from churn.tools.settings import Dimension, TuneSettings, param_key, tune_settings

FAMILIES = ("logistic_regression", "random_forest", "xgboost")
LR = "tune.space.logistic_regression"


def tune_of(raw: dict) -> TuneSettings:
    return tune_settings(raw, parse_params(raw).model)


def error_of(raw: dict) -> str:
    with pytest.raises(ChurnError) as caught:
        tune_of(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_repository_tune_block_parses_with_the_seed_ranges(params_raw):
    tune = tune_of(params_raw)
    assert (tune.family, tune.metric, tune.study_name, tune.storage) == (None, "roc_auc", None, None)
    spaces = {family: {k: (d.low, d.high, d.log) for k, d in tune.space_of(family).items()} for family in FAMILIES}
    assert spaces["logistic_regression"] == {"C": (0.001, 100.0, True)}
    assert spaces["random_forest"] == {
        "n_estimators": (50, 500, False),
        "max_depth": (3, 20, False),
        "min_samples_split": (2, 20, False),
    }
    assert spaces["xgboost"]["learning_rate"] == (0.001, 0.3, True)
    assert spaces["xgboost"]["max_depth"] == (3, 10, False)


def test_bounds_take_the_hyper_parameter_type(params_raw):
    """Integer hyper-parameters are searched over integers, float ones over floats, whatever the YAML wrote."""
    params_raw["tune"]["space"]["logistic_regression"] = {
        "C": {"low": 1, "high": 100},
        "class_weight": {"choices": [None, "balanced"]},
    }
    space = tune_of(params_raw).space_of("logistic_regression")
    assert (space["C"].low, space["C"].high) == (1.0, 100.0)
    assert all(isinstance(b, float) for b in (space["C"].low, space["C"].high))
    assert space["class_weight"].choices == (None, "balanced")
    rf = tune_of(params_raw).space_of("random_forest")["max_depth"]
    assert all(type(b) is int for b in (rf.low, rf.high))


@pytest.mark.parametrize(
    ("space", "key", "words"),
    [
        ({"gamma": {"low": 1, "high": 2}}, f"{LR}.gamma", "is not a known key"),
        ({"C": {"low": 1, "high": 1}}, f"{LR}.C", "low < high"),
        ({"C": {"low": 100, "high": 0.001, "log": True}}, f"{LR}.C", "low < high"),
        ({"C": {"low": 0, "high": 1}}, f"{LR}.C.low", "a valid model.C (a number > 0)"),
        ({"C": {"low": -1, "high": 1, "log": True}}, f"{LR}.C.low", "log scale"),
        ({"C": {"low": 0.1, "hgh": 1}}, f"{LR}.C.hgh", "is not a known key"),
        ({"C": {"low": 0.1}}, f"{LR}.C", "a range {low, high[, log]}"),
        ({"C": {"low": "a", "high": 1}}, f"{LR}.C.low", "a number"),
        ({"C": {"low": True, "high": 2}}, f"{LR}.C.low", "a number"),
        ({"C": {"low": 0.1, "high": 1, "log": "yes"}}, f"{LR}.C.log", "true or false"),
        ({"C": 0.5}, f"{LR}.C", "a mapping"),
        ({"C": {"low": 0.1, "high": 1, "choices": [0.5]}}, f"{LR}.C", "not both"),
        ({"max_iter": {"low": 10.5, "high": 100}}, f"{LR}.max_iter.low", "an integer >= 1"),
        ({"class_weight": {"choices": [None, "weighted"]}}, f"{LR}.class_weight.choices[1]", "model.class_weight"),
        ({"class_weight": {"choices": []}}, f"{LR}.class_weight.choices", "non-empty"),
        ({"C": {"choices": [0.1, 0.1]}}, f"{LR}.C.choices", "without repeats"),
        ({}, LR, "a non-empty mapping"),
    ],
)
def test_bad_logistic_regression_space_names_the_key(params_raw, space, key, words):
    params_raw["tune"]["space"]["logistic_regression"] = space
    message = error_of(params_raw)
    assert f"params.yaml: {key} " in message
    assert words in message


def test_random_forest_bound_outside_the_model_domain(params_raw):
    params_raw["tune"]["space"]["random_forest"]["min_samples_split"] = {"low": 1, "high": 20}
    with pytest.raises(ParamError) as caught:
        tune_of(params_raw)
    assert str(caught.value) == (
        "params.yaml: tune.space.random_forest.min_samples_split.low must be a valid "
        "model.random_forest.min_samples_split (an integer >= 2), got 1"
    )


def test_unknown_family_in_space_and_in_family(params_raw):
    params_raw["tune"]["space"]["svm"] = {"C": {"low": 1, "high": 2}}
    assert "params.yaml: tune.space.svm is not a known key" in error_of(params_raw)
    del params_raw["tune"]["space"]["svm"]
    params_raw["tune"]["family"] = "svm"
    assert error_of(params_raw) == (
        "params.yaml: tune.family must be null (model.type) or one of "
        "logistic_regression, random_forest, xgboost, got 'svm'"
    )


def test_family_without_a_space(params_raw):
    del params_raw["tune"]["space"]["xgboost"]
    tune = tune_of(params_raw)  # the file is valid: only tuning xgboost needs its space
    assert tune.space.xgboost is None
    with pytest.raises(ChurnError, match=r"missing key tune\.space\.xgboost"):
        tune.space_of("xgboost")
    assert tune.space_of("random_forest")


def test_overrides_are_validated_like_the_file(params_raw):
    tune = tune_of(params_raw).override(n_trials=3, family="xgboost", study_name="mine", timeout_s=60, storage=None)
    assert (tune.n_trials, tune.family, tune.study_name, tune.timeout_s, tune.storage) == (
        3,
        "xgboost",
        "mine",
        60,
        None,
    )
    assert tune.space == tune_of(params_raw).space
    with pytest.raises(ParamError, match=r"^command line: tune\.n_trials must be an integer >= 1, got 0$"):
        tune.override(n_trials=0)


def test_dimension_on_its_own():
    assert Dimension(low=1, high=5).log is False
    with pytest.raises(ValueError, match="low < high"):
        Dimension(low=5, high=1)
    assert param_key("random_forest", "max_depth") == "model.random_forest.max_depth"
    assert param_key("logistic_regression", "C") == "model.C"


# --- the tuning tool (churn.tools.tune) ------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def test_a_trial_sets_the_params_keys_the_train_stage_reads(params_raw):
    from churn.tools.tune.search import trial_model

    model = parse_params(params_raw).model
    lr = trial_model(model, "logistic_regression", {"C": 0.25})
    assert (lr.type, lr.C, lr.max_iter) == ("logistic_regression", 0.25, model.max_iter)
    rf = trial_model(model, "random_forest", {"max_depth": 7})
    assert rf.type == "random_forest"
    assert rf.random_forest.model_dump() == {**model.random_forest.model_dump(), "max_depth": 7}
    assert rf.hyperparameters()["max_depth"] == 7


def test_a_trial_searches_each_dimension_in_its_own_type(params_raw):
    from churn.tools.tune.search import suggest

    params_raw["tune"]["space"]["logistic_regression"]["class_weight"] = {"choices": [None, "balanced"]}
    tune = tune_of(params_raw)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    for family in ("logistic_regression", "random_forest"):
        for name, dim in tune.space_of(family).items():
            suggest(trial, param_key(family, name), dim)
    kinds = {key: type(d).__name__ for key, d in trial.distributions.items()}
    assert kinds == {
        "model.C": "FloatDistribution",
        "model.class_weight": "CategoricalDistribution",
        "model.random_forest.n_estimators": "IntDistribution",
        "model.random_forest.max_depth": "IntDistribution",
        "model.random_forest.min_samples_split": "IntDistribution",
    }
    assert trial.distributions["model.C"].log and not trial.distributions["model.random_forest.max_depth"].log
    assert type(trial.params["model.random_forest.max_depth"]) is int


def test_resolved_settings_fill_family_study_and_storage(params_raw, root):
    from churn.tools.tune.search import resolve

    tune = tune_of(params_raw)
    settings = resolve(tune, "random_forest")
    assert (settings.family, settings.study_name) == ("random_forest", "churn-random_forest-roc_auc")
    assert settings.storage == f"sqlite:///{root}/optuna.db"
    mine = resolve(tune.override(family="xgboost", study_name="mine", storage="sqlite:///s.db"), "random_forest")
    assert (mine.family, mine.study_name, mine.storage) == ("xgboost", "mine", f"sqlite:///{root}/s.db")
    del params_raw["tune"]["space"]["xgboost"]
    with pytest.raises(ChurnError, match=r"missing key tune\.space\.xgboost"):
        resolve(tune_of(params_raw), "xgboost")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "sqlite:///{root}/optuna.db"),
        ("sqlite:///studies/x.db", "sqlite:///{root}/studies/x.db"),
        ("sqlite:////elsewhere/x.db", "sqlite:////elsewhere/x.db"),
        ("postgresql+psycopg2://u:p@db:5432/optuna", "postgresql+psycopg2://u:p@db:5432/optuna"),
    ],
)
def test_storage_is_absolute_against_the_repository_root(root, url, expected):
    from churn.tools.tune.storage import resolve_storage

    assert resolve_storage(url) == expected.format(root=root)


def test_apply_command_round_trips_values():
    from churn.tools.tune.apply import apply_command

    record = {"params": {"model.type": "logistic_regression", "model.C": 0.1 + 0.2, "model.class_weight": None}}
    overrides = apply_command(record)[apply_command(record).index("run") + 1 :]
    assert overrides == [
        "-S",
        "model.type=logistic_regression",
        "-S",
        "model.C=0.30000000000000004",
        "-S",
        "model.class_weight=null",
    ]


def _run(study: optuna.Study, trials: int) -> None:
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=trials)


def test_sampler_is_seeded_per_trial():
    from churn.tools.tune.search import seeded_tpe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    one_go = optuna.create_study(sampler=seeded_tpe(3))
    _run(one_go, 14)
    # A study continued by a new process (a new sampler with the same seed) proposes what one run would:
    continued = optuna.create_study(sampler=seeded_tpe(3))
    _run(continued, 4)
    continued.sampler = seeded_tpe(3)
    _run(continued, 10)
    xs = [t.params["x"] for t in one_go.trials]
    assert xs == [t.params["x"] for t in continued.trials]
    assert len(set(xs)) == len(xs)  # no repeated start-up proposals


def test_missing_featurize_outputs_say_to_run_the_pipeline(params_raw, tmp_path, monkeypatch):
    from churn.tools.tune.objective import load_inputs

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ChurnError, match=r"^data/prepared/train\.parquet: not found; .*run `make run` first$"):
        load_inputs(parse_params(params_raw))


# --- workers: one run of a study shared by several processes or hosts -------------------------------------------


def test_a_run_is_open_while_it_has_trials_to_go_and_a_worker_at_work():
    from churn.tools.tune.study import run_is_open

    record = {"target": 10, "started": 1000.0, "grace_period": 60}
    assert run_is_open(record, finished=3, running=1, now=5000.0)  # a trial running
    assert run_is_open(record, finished=3, running=0, now=1030.0)  # just started: its workers are starting
    assert not run_is_open(record, finished=3, running=0, now=1100.0)  # its workers are gone
    assert not run_is_open(record, finished=10, running=1, now=1030.0)  # its trials are done


@pytest.fixture
def study_storage(tmp_path):
    """A heartbeat storage (1 s heartbeats, stale after 2 s) in a sqlite file, and the stale-trial handler."""
    from churn.tools.tune.storage import Faults, open_storage
    from churn.tools.tune.study import StaleTrials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    faults = Faults(heartbeat_interval=1, grace_period=2, max_retry=1)
    stale = StaleTrials(faults.max_retry)
    return open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", faults, stale), faults, stale


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, as a dead worker did
def test_a_worker_joins_the_open_run_at_its_commit_and_refuses_another(study_storage):
    from churn.tools.tune.study import RUN_ATTR, join_run

    storage, faults, _ = study_storage
    study = optuna.create_study(storage=storage, study_name="s")
    here = {"git.commit": "a" * 40}
    assert join_run(study, 5, faults, here, "host-a:1") == 5
    running = study.ask()  # a worker at work
    assert join_run(study, 8, faults, here, "host-b:2") == 5, "joined the open run, whatever its own --trials"
    with pytest.raises(ChurnError) as caught:
        join_run(study, 5, faults, {"git.commit": "b" * 40}, "host-c:3")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"study 's' is being tuned at commit {'a' * 12} (run started by host-a:1); ")
    assert f"this worker is at {'b' * 12}: check out {'a' * 12}" in message
    # Once the run's trials are done, the next command starts a new run at its own commit.
    study.tell(running, 1.0)
    for _ in range(4):
        study.tell(study.ask(), 1.0)
    assert join_run(study, 3, faults, {"git.commit": "b" * 40}, "host-c:3") == 8
    assert study.user_attrs[RUN_ATTR]["commit"] == "b" * 40


def test_a_study_refuses_other_data_in_one_line(tmp_path, params_raw, root):
    from churn.tools.tune.search import resolve
    from churn.tools.tune.storage import open_storage
    from churn.tools.tune.study import load_or_create_study, study_fingerprint

    params = parse_params(params_raw)
    settings = resolve(tune_of(params_raw).override(storage=f"sqlite:///{tmp_path / 'o.db'}"), "logistic_regression")
    storage = open_storage(settings.storage)
    load_or_create_study(storage, settings, study_fingerprint(settings, params, "0" * 32))
    with pytest.raises(ChurnError) as caught:
        load_or_create_study(storage, settings, study_fingerprint(settings, params, "1" * 32))
    assert f"was run with data_md5='{'0' * 32}', now '{'1' * 32}'; set tune.study_name" in str(caught.value)


class Tracker:
    """What the worker loop needs of TrialLogger, without MLflow."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.retries = 0
        self.current = None
        self.lost: list[tuple[int, str]] = []

    @property
    def fresh(self) -> int:
        return len(self.numbers) - self.retries

    def end_lost(self, number: int, error: str) -> None:
        self.lost.append((number, error))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, as a dead worker did
def test_a_dead_worker_trial_is_failed_retried_and_run_by_a_live_worker(study_storage):
    import time

    from churn.tools.tune.worker import work

    storage, faults, stale = study_storage
    stale.tracker = tracker = Tracker()
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=1))
    dead = study.ask()  # a worker that asked for a trial, sent a heartbeat, and died
    dead.suggest_float("x", 0, 1)
    dead.set_user_attr("worker", "lost-host:99")
    storage.record_heartbeat(dead._trial_id)
    time.sleep(faults.grace_period + 1.5)  # sqlite's clock has whole seconds

    def objective(trial: optuna.Trial) -> float:
        tracker.numbers.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    work(study, objective, 3, 3, None, faults, tracker, stale, progress=False)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert trials[1].params == trials[0].params, "the retry, first, with the dead trial's parameters"
    assert trials[1].system_attrs["failed_trial"] == 0
    assert tracker.lost == [(0, "worker lost-host:99 stopped sending heartbeats (killed or lost)")]


def test_local_workers_need_a_database_server(params_raw, root):
    from churn.tools.tune.local_workers import run_workers, worker_command
    from churn.tools.tune.search import resolve
    from churn.tools.tune.storage import Faults

    settings = resolve(tune_of(params_raw), "logistic_regression")
    with pytest.raises(ChurnError, match=r"^--workers 2 needs a study on a database server, not sqlite:///"):
        run_workers(settings, 5, 2, Faults())
    shared = settings.model_copy(update={"storage": "postgresql+psycopg2://u:p@db:5432/optuna"})
    command = worker_command(shared, 5, Faults())
    assert command[1:3] == ["-m", "churn.tools.tune"] and "--apply" not in command
    joined = " ".join(command)
    assert "--workers 1 --trials 5 --storage postgresql+psycopg2://u:p@db:5432/optuna" in joined
    assert "--heartbeat-interval 10 --grace-period 60" in joined


def test_the_grace_period_must_exceed_the_heartbeat_interval(capsys):
    from churn.tools.tune.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["--heartbeat-interval", "10", "--grace-period", "10"])
    assert caught.value.code == 2
    assert "--grace-period (10) must exceed --heartbeat-interval (10)" in capsys.readouterr().err
