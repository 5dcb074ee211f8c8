"""churn.tools.server (`make server`) against docker-compose.yml and docker/mlflow, so the two cannot drift: the same
command lines, auth config and environment; and its settings, each refused in one line when wrong."""

from __future__ import annotations

import configparser
import importlib.util
import itertools
import re
from pathlib import Path

import pytest
import yaml

from churn.errors import ChurnError
from churn.tools import server as tool
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "mlflow" / "Dockerfile"
SHIPPED_INI = REPO / "docker" / "mlflow" / "basic_auth.ini"
# The options whose values are the deployment's (where the store, the artifacts and the socket are).
SETTINGS_FLAGS = ("--backend-store-uri", "--artifacts-destination", "--host", "--port")
# The compose file's `${VAR:?...}` references, filled the way .env would fill them.
COMPOSE_REF = re.compile(r"\$\{([A-Z_]+)[:?-][^}]*\}")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # safe_load resolves the file's anchors


def shape(command: list[str]) -> list[str]:
    """A command with the program's path reduced to its name and each setting's value to `<flag>`."""
    shaped = [Path(command[0]).name]
    for previous, word in itertools.pairwise(command):
        shaped.append(f"<{previous}>" if previous in SETTINGS_FLAGS else word)
    return shaped


def filled(reference: str) -> str:
    return COMPOSE_REF.sub(lambda match: f"x{match[1].lower().replace('_', '')}", reference)


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs = [
        word.split("=", 1) for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.MULTILINE) for word in line.split()
    ]
    return dict(pairs)


def option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, command
    return command[command.index(flag) + 1]


# --- the same command lines as docker-compose.yml ---------------------------------------------------------------


def test_server_command_is_the_compose_services_flag_for_flag(services):
    compose = services["mlflow"]["command"]
    ours = tool.server_command("postgresql+psycopg2://u@db:5432/mlflow", "s3://bucket/", "127.0.0.1", 5123)
    assert shape(ours) == shape(compose)
    # Not vacuous: every setting is there, as a placeholder, once, and `mlflow server` runs with basic auth.
    assert all(shape(compose).count(f"<{flag}>") == 1 for flag in SETTINGS_FLAGS), shape(compose)
    assert shape(compose)[:2] == ["mlflow", "server"]
    assert option(ours, "--app-name") == "basic-auth" and "--serve-artifacts" in ours
    assert Path(ours[0]).name == "mlflow" and Path(ours[0]).is_file()


def test_server_command_puts_each_setting_after_its_flag():
    ours = tool.server_command("postgresql+psycopg2://u@db:5432/mlflow", "/srv/artifacts", "0.0.0.0", 5123)
    assert option(ours, "--backend-store-uri") == "postgresql+psycopg2://u@db:5432/mlflow"
    assert option(ours, "--artifacts-destination") == "/srv/artifacts"
    assert option(ours, "--host") == "0.0.0.0"
    assert option(ours, "--port") == "5123"


def test_workers_are_passed_only_when_asked(services):
    assert "--workers" not in services["mlflow"]["command"]  # compose: MLflow's default
    assert "--workers" not in tool.server_command("u", "a", "h", 1)
    asked = tool.server_command("u", "a", "h", 1, workers=3)
    assert asked[-2:] == ["--workers", "3"]
    assert asked[:-2] == tool.server_command("u", "a", "h", 1)


def test_migration_is_the_compose_migrate_service(services):
    compose = services["mlflow-migrate"]["command"]
    ours = tool.migrate_command("postgresql+psycopg2://u@db:5432/mlflow")
    assert [Path(ours[0]).name, *ours[1:3], "<uri>"] == [*compose[:3], "<uri>"] == ["mlflow", "db", "upgrade", "<uri>"]
    assert len(ours) == len(compose) == 4
    assert ours[3] == "postgresql+psycopg2://u@db:5432/mlflow"
    assert compose[3] == option(services["mlflow"]["command"], "--backend-store-uri")


def test_the_compose_stores_uri_is_one_the_tool_accepts(services):
    """The tool insists on the compose file's form of the URI (PostgreSQL with the psycopg2 driver)."""
    uri = filled(option(services["mlflow"]["command"], "--backend-store-uri"))
    assert uri == "postgresql+psycopg2://xpostgresuser:xpostgrespassword@postgres:5432/xpostgresdb"
    assert tool.backend_store({"MLFLOW_BACKEND_STORE_URI": uri}) == (
        "postgresql+psycopg2://xpostgresuser@postgres:5432/xpostgresdb",
        "xpostgrespassword",
    )


# --- the same auth configuration and environment as the image -----------------------------------------------------


def test_environment_is_the_images_with_the_auth_config_moved(tmp_path):
    image = dockerfile_env()
    assert image["MLFLOW_AUTH_CONFIG_PATH"] == "/mlflow/basic_auth.ini", image
    assert set(image) == {"MLFLOW_AUTH_CONFIG_PATH", *tool.IMAGE_ENV}
    env = tool.server_environment({"PATH": "/bin"}, tmp_path / "basic_auth.ini", None)
    assert {key: env[key] for key in image} == {**image, "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini")}
    assert "PGPASSWORD" not in env


def test_the_admin_variables_are_the_compose_services(services):
    compose_env = services["mlflow"]["environment"]
    auth = {key for key in compose_env if key.startswith(("MLFLOW_AUTH_", "MLFLOW_FLASK_"))}
    assert (
        auth
        == set(tool.ADMIN_VARIABLES)
        == {
            "MLFLOW_AUTH_ADMIN_USERNAME",
            "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY",
        }
    )


def read_ini(path: Path) -> dict[str, str]:
    config = configparser.ConfigParser(interpolation=None)
    assert config.read(path) == [str(path)]
    return dict(config["mlflow"])


def test_auth_config_is_the_shipped_one_with_the_user_database_moved(tmp_path):
    written = read_ini(tool.write_auth_config(tmp_path))
    shipped = read_ini(SHIPPED_INI)
    assert shipped["database_uri"] == "sqlite:////mlflow/auth/basic_auth.db"
    assert written["database_uri"] == f"sqlite:///{tmp_path.resolve() / 'basic_auth.db'}"
    assert tool.auth_database(tmp_path) == tmp_path.resolve() / "basic_auth.db"
    del written["database_uri"], shipped["database_uri"]
    assert written == shipped
    assert len(shipped) >= 4, shipped  # default_permission, authorization_function, the cache's two settings


def test_auth_cache_ttl_override_changes_only_the_ttl(tmp_path):
    written = read_ini(tool.write_auth_config(tmp_path, auth_cache_ttl=3))
    shipped = read_ini(SHIPPED_INI)
    assert written.pop("auth_cache_ttl_seconds") == "3"
    assert shipped.pop("auth_cache_ttl_seconds") == "60"
    del written["database_uri"], shipped["database_uri"]
    assert written == shipped


def mlflow_auth_config_reader():
    """MLflow's own reader of the auth config, loaded by path: importing the package would start the auth app."""
    import mlflow

    spec = importlib.util.spec_from_file_location(
        "_mlflow_auth_config", Path(mlflow.__file__).parent / "server/auth/config.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_auth_config


def test_the_shipped_config_turns_the_credential_cache_on_as_mlflow_reads_it(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(SHIPPED_INI))
    config = mlflow_auth_config_reader()()
    assert config.auth_cache_ttl_seconds == 60
    assert config.auth_cache_max_size == 10000
    assert config.default_permission == "READ"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


# --- settings from the environment ----------------------------------------------------------------------------------

ADMIN = {name: "x" * 16 for name in tool.ADMIN_VARIABLES}
PG = "postgresql+psycopg2://mlflow:s3cr%40t@db.example:5432/mlflow"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "sqlite:///mlflow.db",
        "mysql+pymysql://u:p@h/db",
        "postgresql://u:p@h/db",  # SQLAlchemy takes this for psycopg 3, which is not installed
        "http://127.0.0.1:5000",
    ],
)
def test_a_store_that_is_not_postgresql_with_psycopg2_is_refused_naming_the_variable(tmp_path, uri):
    with pytest.raises(ChurnError) as raised:
        tool.read_settings({**ADMIN, "MLFLOW_BACKEND_STORE_URI": uri}, tmp_path)
    message = str(raised.value)
    assert message.startswith("MLFLOW_BACKEND_STORE_URI ")
    assert "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DATABASE" in message
    assert "\n" not in message and ":p@" not in message
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("missing", tool.ADMIN_VARIABLES)
def test_each_admin_variable_is_required(tmp_path, missing):
    environ = {**ADMIN, "MLFLOW_BACKEND_STORE_URI": PG, missing: " "}
    with pytest.raises(ChurnError, match=rf"^{missing} is not set; the server needs"):
        tool.read_settings(environ, tmp_path)


def test_defaults_are_the_compose_services_but_on_loopback(tmp_path):
    settings = tool.read_settings({**ADMIN, "MLFLOW_BACKEND_STORE_URI": PG}, tmp_path)
    assert settings.backend_store_uri == "postgresql+psycopg2://mlflow@db.example:5432/mlflow"
    assert settings.db_token == "s3cr@t"  # decoded from the URI
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 5000, None)
    assert settings.artifacts_destination == str(tmp_path.resolve() / "artifacts")


def test_the_database_password_leaves_the_command_line_for_libpq(tmp_path):
    settings = tool.read_settings({**ADMIN, "MLFLOW_BACKEND_STORE_URI": PG}, tmp_path)
    command = tool.server_command(settings.backend_store_uri, settings.artifacts_destination, "h", 1)
    commands = " ".join(command + tool.migrate_command(settings.backend_store_uri))
    assert "s3cr" not in commands
    env = tool.server_environment({"MLFLOW_BACKEND_STORE_URI": PG}, tmp_path / "a.ini", settings.db_token)
    assert env["PGPASSWORD"] == "s3cr@t"
    assert "MLFLOW_BACKEND_STORE_URI" not in env


def test_host_port_workers_and_artifacts_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {
        **ADMIN,
        "MLFLOW_BACKEND_STORE_URI": PG,
        "MLFLOW_HOST": "0.0.0.0",
        "MLFLOW_PORT": "5999",
        "MLFLOW_WORKERS": "2",
        "MLFLOW_ARTIFACTS_DESTINATION": "art",
    }
    settings = tool.read_settings(environ, tmp_path / "state")
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 5999, 2)
    assert settings.artifacts_destination == str(tmp_path.resolve() / "art")
    s3 = tool.read_settings({**environ, "MLFLOW_ARTIFACTS_DESTINATION": "s3://team-bucket/mlflow"}, tmp_path)
    assert s3.artifacts_destination == "s3://team-bucket/mlflow"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MLFLOW_PORT", "http"),
        ("MLFLOW_PORT", "0"),
        ("MLFLOW_PORT", "70000"),
        ("MLFLOW_WORKERS", "-1"),
        ("MLFLOW_ARTIFACTS_DESTINATION", "gs://bucket/"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(tmp_path, name, value):
    with pytest.raises(ChurnError, match=rf"^{name} must be "):
        tool.read_settings({**ADMIN, "MLFLOW_BACKEND_STORE_URI": PG, name: value}, tmp_path)


# --- make server, and docs/team-server.md's commands for it ---------------------------------------------------------


def test_make_server_runs_the_tool_in_the_foreground():
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^server:.*## .+\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert target, "Makefile: no `server` target with a `## ` help comment"
    assert target[1].strip().splitlines() == ["exec $(BIN)/python -m churn.tools.server"]
    assert re.search(r"^\.PHONY:.*\bserver\b", makefile, flags=re.MULTILINE)


def doc_section(name: str, title: str) -> str:
    text = (REPO / name).read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"{name}: no section {title!r}"
    return match[1]


def test_the_docs_start_the_server_with_what_the_tool_needs():
    section = doc_section("docs/team-server.md", "`make server`")
    blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "no sh block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert "make server" in commands
    # The admin's variables come from .env (as for docker compose): .env.example declares each of them.
    assert "set -a && . ./.env && set +a" in commands
    declared = re.findall(r"^([A-Z_]+)=", (REPO / ".env.example").read_text(), flags=re.MULTILINE)
    assert set(tool.ADMIN_VARIABLES) <= set(declared)
    # The store: the compose file's URI, on this host, from the same .env variables; the tool accepts it.
    exported = [c for c in commands if c.startswith("export MLFLOW_BACKEND_STORE_URI=")]
    assert len(exported) == 1, commands
    uri = exported[0].split("=", 1)[1]
    assert re.findall(r"\$(\w+)", uri) == ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(declared)
    example = uri.replace("$POSTGRES_USER", "mlflow").replace("$POSTGRES_PASSWORD", "pw").replace("$POSTGRES_DB", "db")
    assert tool.backend_store({"MLFLOW_BACKEND_STORE_URI": example})[1] == "pw"
