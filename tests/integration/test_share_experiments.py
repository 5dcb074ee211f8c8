"""Two teammates share a DVC experiment: a bare git origin, a DVC remote on S3 (moto's server on loopback) and
one MLflow tracking server on PostgreSQL with basic auth, each teammate with an account of their own.

A runs `dvc exp run -S model.C=...` and `make share EXP=...` (`dvc exp push origin <exp>`: the experiment's
git ref, and its cached outputs to the default DVC remote; no run-cache unless `--run-cache`). B, who ran an
experiment of their own, `make fetch EXP=...` (`dvc exp pull`), sees both in `dvc exp show`, and
`dvc exp apply`s A's: B's workspace then holds A's outputs, no stage runs (DVC says everything is up to date),
no MLflow run is made, and `make compare` lists A's experiment with A's MLflow run, whose `dvc.exp_rev` is a
commit B now has.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.helpers import DVC, PYTHON, make_repo, run
from tests.integration.services import S3_ENV, tracking_stack
from tests.integration.test_server import client_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MLFLOW_BUCKET = "mlflow"
DVC_BUCKET = "team-data"
REMOTE_URL = f"s3://{DVC_BUCKET}/churn"
MAKE = ["make", "-o", ".venv/.installed"]  # the symlinked .venv is set up; never reinstall into it
SHARED, OWN = "shared-c", "b-own"


def link_venv(root: Path) -> None:
    """.venv as in a clone after `make setup`: a symlink to this session's, which git is told to ignore."""
    (root / ".venv").symlink_to(REPO / ".venv")
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")


def git_out(root: Path, *args: str) -> str:
    return run(["git", *args], root).stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server):
    buckets = (MLFLOW_BUCKET, DVC_BUCKET)
    with tracking_stack(tmp_path_factory.mktemp("team-stack"), postgres_server, "mlflow", buckets) as made:
        server = made.server
        yield {"s3": made.s3, "server": server, "alice": server.create_user("alice"), "bob": server.create_user("bob")}


def search_runs(server, experiment_id: str, filter_string: str = "") -> list[dict]:
    body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}
    return server.request("POST", "/api/2.0/mlflow/runs/search", body).get("runs", [])


def run_tags(entry: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entry["data"].get("tags", [])}


@pytest.fixture(scope="module")
def team(tmp_path_factory, stack):
    """The whole exchange, step by step; what each step showed is kept for the tests below."""
    base = tmp_path_factory.mktemp("share")
    server, s3 = stack["server"], stack["s3"]
    env_a = {**client_env(server.url, *stack["alice"]), **S3_ENV}
    env_b = {**client_env(server.url, *stack["bob"]), **S3_ENV}
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)

    # A: the project on the shared DVC remote and the tracking server; results committed and pushed.
    a = make_repo(base / "a", rows=300)
    run([*DVC, "remote", "add", "-d", "s3", REMOTE_URL], a)
    run([*DVC, "remote", "modify", "s3", "endpointurl", s3.endpoint], a)
    for name in ("Makefile", "requirements.txt"):
        shutil.copy2(REPO / name, a / name)
    link_venv(a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-q", "-m", "shared remote, Makefile"], a)
    run([PYTHON, "-m", "churn.tools.store", "init"], a, env_a)
    run([*DVC, "repro"], a, env_a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-q", "-m", "results"], a)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "-u", "origin", "main"], a)
    run([*DVC, "push"], a, env_a)

    # The server's admin lets bob write to the team's experiment and registered model (default: READ).
    found = server.request("POST", "/api/2.0/mlflow/experiments/search", {"filter": "name = 'churn'", "max_results": 1})
    experiment_id = found["experiments"][0]["experiment_id"]
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", "churn_model")):
        grant = {"username": "bob", "resource_type": resource_type, "resource_id": resource_id, "permission": "EDIT"}
        server.request("POST", "/api/3.0/mlflow/users/permissions/grant", grant)

    # B: clones, pulls the data and results, and runs an experiment of their own.
    b = base / "b"
    run(["git", "clone", "-q", str(origin), str(b)], base, env_b)
    link_venv(b)
    run([*DVC, "pull"], b, env_b)
    # (one that re-runs only the register stage: each stage run against the server takes tens of seconds)
    run([*DVC, "exp", "run", "-S", "register.min_improvement=0.001", "-n", OWN], b, env_b)

    # A: an experiment, shared with DVC's own command (through `make share`).
    run([*DVC, "exp", "run", "-S", "model.C=0.05", "-n", SHARED], a, env_a)
    refs = git_out(a, "for-each-ref", "refs/exps", "--format=%(objectname) %(refname)").splitlines()
    exp_rev = next(line.split()[0] for line in refs if line.endswith(f"/{SHARED}"))
    a_lock = yaml.safe_load(git_out(a, "show", f"{exp_rev}:dvc.lock"))
    model_md5 = next(o["md5"] for o in a_lock["stages"]["train"]["outs"] if o["path"] == "models/model.pkl")
    model_key = f"churn/files/md5/{model_md5[:2]}/{model_md5[2:]}"
    before_share = s3.keys(DVC_BUCKET)
    shared = run([*MAKE, "share", f"EXP={SHARED}"], a, env_a)
    after_share = s3.keys(DVC_BUCKET)
    parents = search_runs(server, experiment_id, f"tags.`dvc.exp_name` = '{SHARED}' and tags.`churn.role` = 'pipeline'")

    # B: fetches it, sees it beside their own, applies it, and finds nothing to run.
    fetched = run([*MAKE, "fetch", f"EXP={SHARED}"], b, env_b)
    runs_before = len(search_runs(server, experiment_id))
    applied = run([*DVC, "exp", "apply", SHARED], b, env_b)
    repro = run([*DVC, "repro"], b, env_b)
    status = run([*DVC, "status"], b, env_b)
    runs_after = len(search_runs(server, experiment_id))
    compared = run([*MAKE, "compare"], b, env_b)
    return {
        "a": a,
        "b": b,
        "exp_rev": exp_rev,
        "a_lock": a_lock,
        "a_metrics": json.loads(git_out(a, "show", f"{exp_rev}:reports/metrics.json")),
        "model_key": model_key,
        "before_share": before_share,
        "after_share": after_share,
        "shared": shared.stdout + shared.stderr,
        "parents": parents,
        "fetched": fetched.stdout + fetched.stderr,
        "applied": applied.stdout + applied.stderr,
        "repro": repro.stdout + repro.stderr,
        "status": status.stdout + status.stderr,
        "runs_before": runs_before,
        "runs_after": runs_after,
        "compared": compared.stdout + compared.stderr,
        "a_parent_after_compare": server.request(
            "POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "filter": ""}
        ),
    }


def test_share_pushes_the_git_ref_and_the_outputs_but_not_the_run_cache(team):
    assert f"Pushed experiment {SHARED} to Git remote 'origin'" in team["shared"], team["shared"]
    assert "uploaded" in team["shared"]
    assert team["model_key"] not in team["before_share"] and team["model_key"] in team["after_share"]
    assert not [key for key in team["after_share"] if key.startswith("churn/runs/")], "no run-cache by default"
    remote = git_out(team["a"], "ls-remote", "origin", "refs/exps/*").split()
    assert team["exp_rev"] in remote


def test_fetch_shows_the_experiment_beside_b_own(team):
    assert f"Pulled experiment '['{SHARED}']' from Git remote 'origin'" in team["fetched"], team["fetched"]
    assert SHARED in team["fetched"] and OWN in team["fetched"]


def test_apply_gives_b_a_outputs_with_no_stage_run(team):
    assert f"Changes for experiment '{SHARED}' have been applied" in team["applied"]
    assert "Running stage" not in team["repro"], team["repro"]
    assert "Data and pipelines are up to date." in team["repro"]
    assert "Data and pipelines are up to date." in team["status"]
    assert team["runs_after"] == team["runs_before"], "applying an experiment logs nothing to MLflow"
    b_lock = yaml.safe_load((team["b"] / "dvc.lock").read_text())
    assert b_lock == team["a_lock"]
    assert json.loads((team["b"] / "reports" / "metrics.json").read_text()) == team["a_metrics"]
    params = yaml.safe_load((team["b"] / "params.yaml").read_text())
    assert params["model"]["C"] == 0.05


def test_compare_on_b_lists_a_experiment_with_a_run(team):
    assert len(team["parents"]) == 1, team["parents"]
    run_id = team["parents"][0]["info"]["run_id"]
    rows = [line for line in team["compared"].splitlines() if line.startswith(SHARED)]
    assert len(rows) == 1 and run_id[:12] in rows[0], team["compared"]
    assert "MISMATCH" not in team["compared"]


def test_a_run_is_tagged_with_a_commit_b_has(team):
    run_id = team["parents"][0]["info"]["run_id"]
    runs = team["a_parent_after_compare"]["runs"]
    tags = run_tags(next(r for r in runs if r["info"]["run_id"] == run_id))
    assert tags["dvc.exp_rev"] == team["exp_rev"]
    assert git_out(team["b"], "cat-file", "-t", tags["dvc.exp_rev"]) == "commit"
    assert tags["mlflow.user"] == "alice"
