"""The request budget against a real tracking server (`make server`'s: basic auth, PostgreSQL, artifacts in S3),
counted by a proxy in front of it (churn.tools.proxy): what one `dvc repro`, `store init`, a dvc experiment,
`compare` and tuning trials cost in round trips.

Per stage: at most 6 requests of its own (health, experiment, its run's creation with all tags, its records in
as few log_batch calls as MLflow's limits allow, its dataset inputs in one call, its end) besides one upload per
artifact file, and at most 6 for the parent (found by one search, created once with the dead-run sweep, back to
RUNNING, its share of the records, its end). The register stage also logs a model (at most 6 besides its files)
and changes the registry from one read of it (7 calls, 11 requests with MlflowClient's own checks, for a new
champion). Nothing the process knows is read back: no `runs/get` outside MLflow's own model logging.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

from churn.tools.proxy import CountingProxy, Request, summary
from tests.conftest import project_env
from tests.integration.helpers import DVC, PYTHON, make_repo, run
from tests.integration.services import tracking_stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUCKET = "mlflow"
STAGES = ["prepare", "featurize", "train", "evaluate", "register"]
# The registry: one read (the registered model, its versions), the new version, its aliases, the champion history
# and the settled mark: 7 calls, and MlflowClient checks before each alias or tag change that the name is not a
# prompt (a `registered-models/get` each): 11 for a new champion.
OWN, PARENT, MODEL, REGISTRY = 6, 6, 6, 11
TRIAL = 6


@contextmanager
def as_client(url: str, user: str, token: str):
    """MLflow's credentials in this process's environment for the block (restored afterwards)."""
    names = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": token}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        import mlflow

        yield mlflow.MlflowClient(url)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def counted(tmp_path_factory, postgres_server):
    """A clone on the server through the counting proxy: `store init`, `dvc repro`, `dvc repro -f` (the same
    model again: the registry's identical-version path), a DVC experiment, `compare`, tuning trials; the
    requests of each."""
    workdir = tmp_path_factory.mktemp("budget")
    with tracking_stack(workdir, postgres_server, "budget", (BUCKET,)) as made:
        server = made.server
        with CountingProxy(server.url) as proxy:
            root = make_repo(workdir / "repo", rows=400)
            user, token = server.admin
            credentials = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": token}
            env = project_env(MLFLOW_TRACKING_URI=proxy.url, **credentials)
            counts: dict[str, list[Request]] = {}
            run([PYTHON, "-m", "churn.tools.store", "init"], root, env)
            counts["init"] = proxy.reset()
            run([*DVC, "repro"], root, env)
            counts["repro"] = proxy.reset()
            run([*DVC, "repro", "-f"], root, env)
            counts["again"] = proxy.reset()
            run(["git", "add", "-A"], root, env)
            run(["git", "commit", "-q", "-m", "pipeline results"], root, env)
            run([*DVC, "exp", "run", "-S", "model.C=0.05", "--name", "smaller-c"], root, env)
            counts["exp"] = proxy.reset()
            run([PYTHON, "-m", "churn.tools.compare"], root, env)
            counts["compare"] = proxy.reset()
            tune = [PYTHON, "-m", "churn.tools.tune", "--no-progress", "--family", "logistic_regression"]
            run([*tune, "--trials", "3"], root, env)
            counts["tune"] = proxy.reset()
            with as_client(server.url, *server.admin) as client:
                experiment = client.get_experiment_by_name("churn").experiment_id
                runs = client.search_runs([experiment], max_results=1000)
                artifacts = {r.info.run_id: files(client, r.info.run_id) for r in runs}
            yield {"counts": counts, "runs": runs, "artifacts": artifacts}


def files(client, run_id: str, path: str | None = None) -> int:
    """How many artifact files a run has."""
    total = 0
    for item in client.list_artifacts(run_id, path):
        total += files(client, run_id, item.path) if item.is_dir else 1
    return total


def stage_segments(requests: list[Request]) -> list[list[Request]]:
    """One list of requests per stage process: each starts with the store's health check."""
    segments: list[list[Request]] = []
    for request in requests:
        if request.endpoint == "GET health":
            segments.append([])
        assert segments, f"a request before any stage began: {request}"
        segments[-1].append(request)
    return segments


def classify(segment: list[Request], parent_id: str) -> dict[str, list[Request]]:
    groups: dict[str, list[Request]] = {"own": [], "parent": [], "upload": [], "model": [], "registry": []}
    for request in segment:
        endpoint = request.endpoint
        if request.is_upload:
            groups["upload"].append(request)
        elif endpoint == "POST runs/search" or parent_id in (request.run_id, request.created):
            groups["parent"].append(request)
        elif "logged-models" in endpoint or endpoint in ("POST runs/outputs", "GET runs/get"):
            groups["model"].append(request)
        elif endpoint.split()[1].startswith(("registered-models", "model-versions")):
            groups["registry"].append(request)
        else:
            groups["own"].append(request)
    return groups


def pipeline(counted, name: str) -> tuple[str, list[tuple[str, dict[str, list[Request]]]]]:
    """The parent run of one counted pipeline execution and each stage's requests, classified."""
    requests = counted["counts"][name]
    stages = STAGES if name != "exp" else STAGES[2:]  # model.C: train, evaluate and register run again
    created = {r.created for r in requests if r.created}
    parents = [r for r in counted["runs"] if r.info.run_id in created and r.data.tags.get("churn.role") == "pipeline"]
    assert len(parents) == 1, f"{name}: {len(parents)} parent runs created"
    segments = stage_segments(requests)
    assert len(segments) == len(stages), [summary(s) for s in segments]
    return parents[0].info.run_id, [
        (stage, classify(segment, parents[0].info.run_id)) for stage, segment in zip(stages, segments, strict=True)
    ]


def stage_run_id(counted, groups: dict[str, list[Request]], stage: str) -> str:
    created = [r.created for r in groups["own"] if r.created]
    assert len(created) == 1, f"{stage}: {len(created)} runs created"
    by_id = {r.info.run_id: r for r in counted["runs"]}
    assert by_id[created[0]].data.tags["dvc.stage"] == stage
    return created[0]


@pytest.mark.parametrize("name", ["repro", "again", "exp"])
def test_each_stage_keeps_to_its_budget(counted, name):
    _parent, stages = pipeline(counted, name)
    report = []
    for stage, groups in stages:
        sizes = {group: len(items) for group, items in groups.items()}
        report.append(f"{stage}: {sizes}")
        assert sizes["own"] <= OWN, f"{stage}: {summary(groups['own'])}"
        assert sizes["parent"] <= PARENT, f"{stage}: {summary(groups['parent'])}"
        if stage == "register":
            assert sizes["model"] <= MODEL, summary(groups["model"])
            assert sizes["registry"] <= REGISTRY, summary(groups["registry"])
        else:
            assert sizes["model"] == sizes["registry"] == 0, f"{stage}: {summary(groups['model'] + groups['registry'])}"
    print(f"\n{name}: " + "; ".join(report))


@pytest.mark.parametrize("name", ["repro", "again", "exp"])
def test_uploads_are_one_per_artifact_file_and_nothing_is_read_back(counted, name):
    _parent, stages = pipeline(counted, name)
    for stage, groups in stages:
        run_id = stage_run_id(counted, groups, stage)
        own_uploads = [r for r in groups["upload"] if r.run_id == run_id]
        model_uploads = [r for r in groups["upload"] if r.run_id != run_id]
        assert len(own_uploads) == counted["artifacts"][run_id], stage
        if stage == "register":
            assert len(model_uploads) >= 5, "the logged model's files (MLmodel, model, requirements, examples)"
        else:
            assert model_uploads == []
        reads = [r for r in groups["own"] + groups["parent"] if r.endpoint == "GET runs/get"]
        assert reads == [], f"{stage} read back a run it knows: {reads}"
    refused = [(r.endpoint, r.status) for r in counted["counts"][name] if r.status != 200]
    # The one expected refusal: the registered model does not exist before the first registration.
    assert refused == ([("GET registered-models/get", 404)] if name == "repro" else []), refused


def test_the_parent_is_created_once_and_found_by_one_search_per_stage(counted):
    parent_id, stages = pipeline(counted, "repro")
    searches = [len([r for r in g["parent"] if r.endpoint == "POST runs/search"]) for _s, g in stages]
    assert searches == [2, 1, 1, 1, 1]  # the first stage also sweeps this host's dead runs
    parent = next(r for r in counted["runs"] if r.info.run_id == parent_id)
    assert parent.info.status == "FINISHED"
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("churn.stage_status.")} == {
        f"churn.stage_status.{stage}": "FINISHED" for stage in STAGES
    }
    assert float(parent.data.metrics["test_roc_auc"]) > 0  # the stages' share reached the parent


def test_a_new_version_and_an_identical_one_read_the_registry_once(counted):
    _p, first = pipeline(counted, "repro")
    _p, again = pipeline(counted, "again")
    first_registry = [r.endpoint for r in dict(first)["register"]["registry"]]
    again_registry = [r.endpoint for r in dict(again)["register"]["registry"]]
    assert first_registry.count("POST model-versions/create") == 1
    assert again_registry == ["GET registered-models/get", "GET model-versions/search"]  # identical: no change


def test_compare_reads_the_runs_once_and_tags_only_what_changed(counted):
    endpoints = [r.endpoint for r in counted["counts"]["compare"]]
    assert endpoints.count("POST runs/search") == 1, endpoints
    assert "GET runs/get" not in endpoints
    assert endpoints.count("POST runs/set-tag") == 1, endpoints  # the one experiment's dvc.exp_rev
    assert len(endpoints) <= 4, endpoints


def test_store_init_is_a_few_requests(counted):
    endpoints = [r.endpoint for r in counted["counts"]["init"]]
    assert len(endpoints) <= 4, endpoints
    assert "POST experiments/create" in endpoints


def test_each_tuning_trial_keeps_to_its_budget(counted):
    trials = {r.info.run_id for r in counted["runs"] if r.data.tags.get("optuna.trial")}
    assert len(trials) == 3
    per_trial = {run_id: 0 for run_id in trials}
    for request in counted["counts"]["tune"]:
        if request.run_id in per_trial:
            per_trial[request.run_id] += 1
        elif request.created in per_trial:
            per_trial[request.created] += 1
    assert all(0 < n <= TRIAL for n in per_trial.values()), per_trial
