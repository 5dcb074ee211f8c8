"""Shared fixtures: the repository's params, small generated tables, and an isolated stage workspace."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from churn.core.generate import generate
from churn.tools.sandbox import copy_project, project_env  # noqa: F401 - re-exported to the tests

REPO = Path(__file__).resolve().parents[1]
# Stage tests use the bundled sample's first rows. (With seed 7 the 70 customers the split sends to test
# held 37% churners against 25% in train, and the logistic regression missed register's log_loss gate.)
SAMPLE_SEED = 42
TELCO = REPO.parent / "shared" / "data" / "telco-customer-churn" / "Telco-Customer-Churn.csv"


# The test modules that take longest (minutes: repositories, tracking servers, fresh clones), longest first.
# `make test` runs test files side by side (pytest-xdist, --dist loadfile), handing each worker the next file in
# collection order; these go first, so that the run does not end with one of them still going alone.
SLOWEST_FIRST = (  # from `make test`'s durations, 2026-12-08
    "integration/test_failures.py",
    "integration/test_experiments.py",
    "integration/test_cross_cpu.py",
    "integration/test_fresh_clone.py",
    "integration/test_bad_inputs.py",
    "integration/test_tune.py",
    "integration/test_readme.py",
    "integration/test_share_experiments.py",
    "integration/test_request_budget.py",
    "integration/test_tune_workers.py",
    "integration/test_other_dataset.py",
    "integration/test_own_data.py",
    "integration/test_pipeline.py",
    "integration/test_data_versions.py",
    "integration/test_review_artifacts.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """SLOWEST_FIRST's modules first, in its order; the rest as collected (a stable sort: each module's tests
    keep their order)."""
    rank = {REPO / "tests" / name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))


def require(condition: object, missing: str) -> None:
    """Skip the test unless `condition` holds, in one line naming what is missing and how to get it; under
    CI=true fail instead: .ci/run provides every service, browser and file the tests need, so a skip in CI
    would be a test that silently never ran."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
def telco() -> Path:
    """The IBM Telco CSV, read from ../shared beside the repository (never committed)."""
    require(TELCO.exists(), f"the Telco sample is not at {TELCO}: put Telco-Customer-Churn.csv there")
    return TELCO


@pytest.fixture(autouse=True)
def isolated_process_state():
    """Each test starts from the same process state: environment variables and MLflow's process-wide tracking
    and registry URIs are restored after it (tests that run stages or scoring in-process set them)."""
    uris = (
        ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
        ("mlflow.tracking._model_registry.utils", "_registry_uri"),
    )

    def mlflow_uris() -> dict:
        return {(m, n): getattr(sys.modules[m], n, None) for m, n in uris if m in sys.modules}

    environ, before = dict(os.environ), mlflow_uris()
    yield
    os.environ.clear()
    os.environ.update(environ)
    for (module, name), _ in mlflow_uris().items():
        setattr(sys.modules[module], name, before.get((module, name)))


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """Stages run by the tests' `dvc repro` use warm stage servers (warmfork) of this session only, in a
    private directory of their own, stopped at the end: never a server the developer's own runs started."""
    import subprocess
    import tempfile

    directory = tempfile.mkdtemp(prefix="warmfork-test-")  # mode 0700, this user's: a valid WARMFORK_DIR
    previous = os.environ.get("WARMFORK_DIR")
    os.environ["WARMFORK_DIR"] = directory
    yield Path(directory)
    subprocess.run([sys.executable, "-m", "warmfork", "--stop", "--all"], capture_output=True, check=False)
    if previous is None:
        os.environ.pop("WARMFORK_DIR", None)
    else:
        os.environ["WARMFORK_DIR"] = previous
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A SQLAlchemy URI of a PostgreSQL role that may create databases, for tests marked `postgres`: the server
    of CHURN_TEST_POSTGRES_URI (.ci/run) or else a throwaway cluster this session starts from the installed
    binaries and stops at its end; skipped (failed under CI=true) when no PostgreSQL server binaries are installed."""
    from tests.integration.services import postgres_server  # imports this module: not at the top

    with postgres_server() as uri:
        yield uri


@pytest.fixture(scope="session")
def repo_params_raw() -> dict:
    """params.yaml of the repository, as a plain mapping (copy before changing it)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def params_raw(repo_params_raw) -> dict:
    return copy.deepcopy(repo_params_raw)


@pytest.fixture
def customers():
    """The bundled sample's first 400 customers (generate.seed 42): its shape, small enough for stage tests."""
    return generate(400, seed=SAMPLE_SEED)


@pytest.fixture
def workspace(tmp_path, monkeypatch, params_raw, customers):
    """A directory laid out like the repository, with params.yaml, a raw CSV and its own MLflow store.

    The current directory is the workspace, so stages run as DVC would run them.
    """
    return _make_workspace(tmp_path, monkeypatch, params_raw, customers)


@pytest.fixture(scope="module")
def module_workspace(tmp_path_factory, repo_params_raw):
    """The `workspace` layout shared by one test module: one pipeline run that many small tests assert on."""
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _make_workspace(root, monkeypatch, copy.deepcopy(repo_params_raw), generate(400, seed=SAMPLE_SEED))


def _make_workspace(root: Path, monkeypatch: pytest.MonkeyPatch, params_raw: dict, customers) -> Path:
    (root / "data" / "raw").mkdir(parents=True)
    customers.to_csv(root / "data" / "raw" / "customers.csv", index=False, float_format="%.2f")
    params_raw["train"]["cv_folds"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params_raw, sort_keys=False))
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("CHURN_PIPELINE_KEY", f"test-{root.name}")
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)
    return root


def write_params(root: Path, raw: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store with its schema migrated, made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def migrated_store(workspace, mlflow_store_template) -> Path:
    """`workspace` with a copy of the migrated store at its MLFLOW_TRACKING_URI, saving seconds of schema
    migrations per test; for tests about a stage, not about creating the store. Returns the store's path."""
    store = workspace / "mlflow.db"
    shutil.copyfile(mlflow_store_template, store)
    return store


def delete_key(raw: dict, dotted: str) -> None:
    """Remove `a.b.c` from a params mapping (a test of the one-line 'missing key' message)."""
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[part]
    del raw[last]
