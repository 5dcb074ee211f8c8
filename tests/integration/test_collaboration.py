"""Two team members share one git origin and one DVC remote on S3 (moto's server on loopback).

A adds rows to the raw data, `dvc add`, reproduces, `dvc push`, commits and pushes; B pulls with git and DVC
and gets A's data and metrics, reproduces them exactly, and `git checkout <older commit> && dvc checkout` brings
the old data back byte for byte. The project's default local remote (`dvc-storage/` in the clone) works too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from churn.tools.generate import write_csv
from tests.conftest import REPO, copy_project, project_env
from tests.integration.helpers import DVC, run
from tests.integration.services import S3_ENV, moto_s3

pytestmark = pytest.mark.slow

BUCKET = "team-data"
REMOTE_URL = f"s3://{BUCKET}/churn"
RAW = "data/raw/customers.csv"
ROWS_BEFORE, ROWS_AFTER = 300, 400


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_out(root: Path, *args: str) -> str:
    return run(["git", *args], root).stdout.strip()


def metrics(root: Path) -> dict:
    return json.loads((root / "reports" / "metrics.json").read_text())


def new_project(root: Path, endpoint: str) -> Path:
    """Clone A's first commit: the project with the repository's own .dvc/config (default remote `local`),
    plus the shared S3 remote as the default; A keeps its S3 keys in .dvc/config.local, which git never sees."""
    copy_project(root)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    settings["train"]["cv_folds"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    write_csv(ROWS_BEFORE, 42, root / RAW, progress=False)
    run(["git", "init", "-q", "-b", "main"], root)
    run([*DVC, "init", "-q"], root)
    shutil.copyfile(REPO / ".dvc" / "config", root / ".dvc" / "config")
    # docs/experiments.md, "Sharing data: the DVC remote": exactly these commands.
    run([*DVC, "remote", "add", "-d", "s3", REMOTE_URL], root)
    run([*DVC, "remote", "modify", "s3", "endpointurl", endpoint], root)
    run([*DVC, "remote", "modify", "--local", "s3", "access_key_id", S3_ENV["AWS_ACCESS_KEY_ID"]], root)
    run([*DVC, "remote", "modify", "--local", "s3", "secret_access_key", S3_ENV["AWS_SECRET_ACCESS_KEY"]], root)
    run([*DVC, "add", "-q", RAW], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "project"], root)
    return root


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("s3")) as endpoint:
        endpoint.create_bucket(BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3):
    """The whole exchange, step by step; each step's observations are kept for the tests below."""
    base = tmp_path_factory.mktemp("team")
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    seen: dict = {"origin": origin}

    # A: the project, its first results, pushed to git and to the DVC remote.
    a = new_project(base / "a", s3.endpoint)
    run([*DVC, "repro"], a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-q", "-m", "results on 300 customers"], a)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "-u", "origin", "main"], a)
    run([*DVC, "push"], a)
    seen["old_commit"] = git_out(a, "rev-parse", "HEAD")
    seen["old_raw"] = (a / RAW).read_bytes()
    seen["old_metrics"] = metrics(a)

    # B: clones and pulls; no keys in B's config, only in its environment (the other documented way).
    b = base / "b"
    env_b = project_env(**S3_ENV)
    run(["git", "clone", "-q", str(origin), str(b)], base, env_b)
    run([*DVC, "pull"], b, env_b)
    seen["b_first_repro"] = run([*DVC, "repro"], b, env_b).stdout
    seen["b_first_raw"] = sha256(b / RAW)

    # A: more customers; the generator's prefix property makes this an append of 100 rows.
    write_csv(ROWS_AFTER, 42, a / RAW, progress=False)
    run([*DVC, "add", "-q", RAW], a)
    run([*DVC, "repro"], a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-q", "-m", "add 100 customers"], a)
    run([*DVC, "push"], a)
    run(["git", "push", "-q"], a)
    seen["new_commit"] = git_out(a, "rev-parse", "HEAD")
    seen["new_raw"] = (a / RAW).read_bytes()
    seen["new_metrics"] = metrics(a)
    seen["new_lock"] = (a / "dvc.lock").read_text()

    # B: git pull, dvc pull, dvc repro.
    run(["git", "pull", "-q"], b, env_b)
    run([*DVC, "pull"], b, env_b)
    seen["b_second_repro"] = run([*DVC, "repro"], b, env_b).stdout
    return {"a": a, "b": b, "env_b": env_b, **seen}


def test_a_pushed_its_data_to_the_s3_remote(team, s3):
    pointer = yaml.safe_load((team["a"] / f"{RAW}.dvc").read_text())["outs"][0]["md5"]
    keys = s3.keys(BUCKET, "churn/")
    assert f"churn/files/md5/{pointer[:2]}/{pointer[2:]}" in keys
    assert len(team["new_raw"].splitlines()) == ROWS_AFTER + 1  # header
    assert team["new_raw"].startswith(team["old_raw"]), "A appended rows"


def test_b_first_clone_gets_a_data_and_results_without_recomputing(team):
    assert team["b_first_raw"] == hashlib.sha256(team["old_raw"]).hexdigest()
    assert "Data and pipelines are up to date" in team["b_first_repro"]


def test_b_sees_a_new_data_and_metrics(team):
    b = team["b"]
    assert git_out(b, "rev-parse", "HEAD") == team["new_commit"]
    assert (b / RAW).read_bytes() == team["new_raw"]
    assert "Data and pipelines are up to date" in team["b_second_repro"]
    assert metrics(b) == team["new_metrics"]
    assert team["new_metrics"] != team["old_metrics"], "more data changed the results"
    diff = json.loads(run([*DVC, "metrics", "diff", "HEAD~1", "--json"], b, team["env_b"]).stdout)
    changes = diff["reports/metrics.json"]
    assert any(entry["diff"] != 0 for entry in changes.values()), changes


def test_b_reproduces_a_results_exactly(team):
    b = team["b"]
    run([*DVC, "repro", "--force"], b, team["env_b"])
    assert metrics(b) == team["new_metrics"]
    assert (b / "dvc.lock").read_text() == team["new_lock"]
    assert git_out(b, "status", "--porcelain") == ""


def test_checkout_of_the_older_commit_restores_the_old_data_byte_for_byte(team):
    b, env_b = team["b"], team["env_b"]
    run(["git", "checkout", "-q", team["old_commit"]], b, env_b)
    try:
        run([*DVC, "checkout"], b, env_b)
        assert (b / RAW).read_bytes() == team["old_raw"]
        assert metrics(b) == team["old_metrics"]
        assert "up to date" in run([*DVC, "status"], b, env_b).stdout
    finally:
        run(["git", "checkout", "-q", "main"], b, env_b)
        run([*DVC, "checkout"], b, env_b)
    assert (b / RAW).read_bytes() == team["new_raw"]


def test_s3_keys_stay_out_of_git(team):
    a = team["a"]
    assert "access_key_id" in (a / ".dvc" / "config.local").read_text()
    run(["git", "check-ignore", "-q", ".dvc/config.local"], a)
    tracked = git_out(a, "ls-files", ".dvc")
    assert "config.local" not in tracked
    committed = git_out(a, "show", "HEAD:.dvc/config")
    assert "access_key" not in committed
    assert "endpointurl" in committed and REMOTE_URL in committed


def test_the_default_local_remote_is_the_clone_own_dvc_storage_folder(team, tmp_path):
    clone = tmp_path / "c"
    env = project_env(**S3_ENV)
    run(["git", "clone", "-q", str(team["origin"]), str(clone)], tmp_path, env)
    run([*DVC, "pull", "-r", "s3", f"{RAW}.dvc"], clone, env)

    run([*DVC, "push", "-r", "local", f"{RAW}.dvc"], clone, env)
    pointer = yaml.safe_load((clone / f"{RAW}.dvc").read_text())["outs"][0]["md5"]
    assert (clone / "dvc-storage" / "files" / "md5" / pointer[:2] / pointer[2:]).is_file()
    assert git_out(clone, "status", "--porcelain") == "", "dvc-storage/ is gitignored"

    shutil.rmtree(clone / ".dvc" / "cache")
    (clone / RAW).unlink()
    run([*DVC, "pull", "-r", "local", f"{RAW}.dvc"], clone, env)
    assert (clone / RAW).read_bytes() == team["new_raw"]
