"""The production tracking stack (docker-compose.yml, .env.example, docker/mlflow), checked offline.

No Docker engine runs here (ARCHITECTURE.md, "Facts measured"), so these tests check the files: the compose
specification's schema, pinned images, loopback-only ports, credentials only from .env, the start order, the
MLflow server's command and auth wiring, and that no secret is committed anywhere in the repository.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
MLFLOW_DOCKER = REPO / "docker" / "mlflow"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# An exact version: major.minor at least (PostgreSQL's 15.18 is a full release), optional suffix such as
# "-alpine"; or MinIO's dated release tags. Rejects "latest", "15", "15-alpine", "v3".
EXACT_TAG = re.compile(r"^(v?\d+\.\d+(\.\d+)*(-[A-Za-z0-9.]+)?|RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)$")
IMAGE = re.compile(r"^(?P<name>[^@]+?):(?P<tag>[^:@/]+)(@sha256:[0-9a-f]{64})?$")
# A credential taken from .env, required: `${VAR:?message}` (a `${VAR:-default}` would commit a default).
REQUIRED_REF = re.compile(r"^\$\{(?P<var>[A-Z][A-Z0-9_]*):\?[^}]+\}$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY")
# Variables the compose file reads from .env; `$${...}` is an escape for the container's shell.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )
    return {key: value for key, value in pairs}


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


# --- the compose specification --------------------------------------------------------------------------------------


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    # Proxies pointing at a closed port: a download attempt would fail, so a pass proves the check is offline.
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_compose_file_validates_against_the_compose_specification():
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_invalid_compose_file(tmp_path):
    """The control for the test above: the vendored schema does reject a wrong file."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = check_compose_schema(path)
    assert result.returncode != 0, result.stdout


# --- images ---------------------------------------------------------------------------------------------------------


def test_every_image_is_pinned_to_an_exact_version(services):
    for name, service in services.items():
        assert "image" in service, f"{name}: no image"
        match = IMAGE.match(service["image"])
        assert match, f"{name}: image {service['image']!r} has no tag"
        assert EXACT_TAG.match(match["tag"]), f"{name}: tag {match['tag']!r} is not an exact version"


def test_mlflow_image_is_built_from_the_pinned_official_image_matching_the_client():
    dockerfile = (MLFLOW_DOCKER / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert bases == [f"ghcr.io/mlflow/mlflow:v{version('mlflow')}"]


def test_dockerfile_pins_the_packages_it_adds_as_requirements_txt_does():
    dockerfile = (MLFLOW_DOCKER / "Dockerfile").read_text()
    install = re.search(r"pip install (.*?)(?:\n\n|\nRUN|\Z)", dockerfile, flags=re.DOTALL)
    assert install
    packages = [word for word in install[1].replace("\\", " ").split() if not word.startswith("-")]
    assert packages and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", p) for p in packages), packages
    requirements = (REPO / "requirements.txt").read_text().lower().splitlines()
    shared = [pin.lower() for pin in packages if pin.split("==")[0].lower() in ("psycopg2-binary", "boto3")]
    assert len(shared) == 2, f"the image no longer installs psycopg2-binary and boto3: {packages}"
    for pin in shared:
        assert pin in requirements, f"{pin} differs from requirements.txt"


# --- network exposure -----------------------------------------------------------------------------------------------


def test_published_ports_listen_on_loopback_only(services):
    loopback = re.compile(r"^(127\.0\.0\.1|\$\{[A-Z_]+:-127\.0\.0\.1\}):")
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert {"mlflow", "minio"} <= {name for name, _ in published}, published  # the UI and the S3 console
    for name, port in published:
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
        else:
            assert loopback.match(str(port)), f"{name}: port {port!r} is not bound to 127.0.0.1"
        assert "0.0.0.0" not in str(port)


def test_postgres_is_reachable_only_on_the_internal_network(compose, services):
    assert "ports" not in services["postgres"]
    assert services["postgres"]["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True


# --- credentials ----------------------------------------------------------------------------------------------------


def test_every_credential_in_the_compose_file_is_a_required_env_reference(services):
    settings = [(name, key, value) for name, s in services.items() for key, value in environment(s).items()]
    credentials = [(name, key, value) for name, key, value in settings if SECRET_NAME.search(key)]
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"} <= {k for _, k, _ in credentials}
    for name, key, value in credentials:
        assert REQUIRED_REF.match(value), f"{name}: {key} is not a required ${{VAR:?...}} reference"
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert REQUIRED_REF.match(environment(services["postgres"])[key]), key


def test_connection_uris_carry_no_literal_password(services):
    # Any `scheme://user:password@host` in the file: with the `${...}` references blanked, nothing else may remain.
    blanked = re.sub(r"\$\{[^}]*\}", "${}", COMPOSE.read_text())
    userinfos = re.findall(r"://([^/@\s\"']*)@", blanked)
    assert userinfos, "expected the PostgreSQL backend store URI"
    assert set(userinfos) == {"${}:${}"}, "a connection URI in docker-compose.yml holds a literal user or password"
    uri = option(services["mlflow"]["command"], "--backend-store-uri")
    parts = re.fullmatch(r"postgresql\+psycopg2://(\$\{[^}]+\}):(\$\{[^}]+\})@postgres:5432/(\$\{[^}]+\})", uri)
    assert parts, uri
    assert [REQUIRED_REF.match(ref)["var"] for ref in parts.groups()] == [
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
    ]


def test_env_example_lists_every_variable_and_leaves_every_credential_empty():
    declared = env_example()
    used = set(COMPOSE_VAR.findall(COMPOSE.read_text()))
    assert used - declared.keys() == set(), "variables used by docker-compose.yml but missing from .env.example"
    assert declared.keys() - used == set(), "variables in .env.example that docker-compose.yml does not use"
    # Secrets, and the account names of MinIO's root and MLflow's admin (no guessable defaults).
    accounts = ("MINIO_ROOT_USER", "MLFLOW_AUTH_ADMIN_USERNAME")
    credentials = {key: value for key, value in declared.items() if SECRET_NAME.search(key) or key in accounts}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", *accounts} <= credentials.keys(), sorted(declared)
    for key, value in credentials.items():
        assert value == "", f".env.example gives {key} a value; credentials must stay empty"
    client = [line for line in ENV_EXAMPLE.read_text().splitlines() if line.startswith("# export MLFLOW_TRACKING_")]
    assert [line.split("=")[0].split()[-1] for line in client] == [
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ]
    for line in client:
        assert line.endswith("=") or line.endswith("=http://127.0.0.1:5000"), line


def test_dot_env_is_gitignored():
    result = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", ".env"], check=False)
    assert result.returncode == 0, ".env is not gitignored"


# --- start order and one-shot jobs ----------------------------------------------------------------------------------


def test_services_start_in_dependency_order(services):
    assert services["create-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["mlflow-migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
        "mlflow-migrate": {"condition": "service_completed_successfully"},
    }
    for one_shot in ("create-bucket", "mlflow-migrate"):
        assert services[one_shot]["restart"] == "no"


def test_create_bucket_is_idempotent_and_keeps_root_credentials_out_of_mlflow(services):
    script = "\n".join(services["create-bucket"]["command"])
    assert 'mc mb --ignore-existing "local/$$MLFLOW_BUCKET"' in script
    assert environment(services["create-bucket"])["MLFLOW_BUCKET"] == "${MLFLOW_BUCKET:-mlflow}"
    assert "mc admin policy create local mlflow-artifacts" in script
    assert not any(key.startswith("MINIO_ROOT") for key in environment(services["mlflow"]))


def test_migration_runs_against_the_same_backend_store_as_the_server(services):
    migrate = services["mlflow-migrate"]["command"]
    assert migrate[:3] == ["mlflow", "db", "upgrade"]
    assert migrate[3] == option(services["mlflow"]["command"], "--backend-store-uri")
    assert services["mlflow-migrate"]["image"] == services["mlflow"]["image"]


# --- the MLflow server ----------------------------------------------------------------------------------------------


def test_mlflow_server_command(services):
    command = services["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    # The driver is named: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which the image lacks.
    assert option(command, "--backend-store-uri").startswith("postgresql+psycopg2://")
    assert option(command, "--artifacts-destination") == "s3://${MLFLOW_BUCKET:-mlflow}/"
    assert "--serve-artifacts" in command
    assert option(command, "--app-name") == "basic-auth"
    assert option(command, "--port") == "5000"
    assert services["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_PORT:-5000}:5000"]
    env = environment(services["mlflow"])
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    ):
        assert REQUIRED_REF.match(env[key]), key


def test_basic_auth_config_holds_no_credential_and_keeps_users_on_a_volume(services, monkeypatch):
    """Read the image's auth config with MLflow's own reader (the client is the server's version)."""
    # Loaded by path: importing `mlflow.server.auth.config` runs the package's __init__, which needs Flask-WTF
    # (the `mlflow[auth]` extra, installed in the image but not in this venv). config.py itself does not.
    import mlflow  # config.py imports mlflow.environment_variables

    spec = importlib.util.spec_from_file_location(
        "_mlflow_auth_config", Path(mlflow.__file__).parent / "server/auth/config.py"
    )
    auth_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auth_config)

    ini = MLFLOW_DOCKER / "basic_auth.ini"
    parser = configparser.ConfigParser()
    parser.read(ini)
    assert "admin_password" not in parser["mlflow"]
    dockerfile = (MLFLOW_DOCKER / "Dockerfile").read_text()
    in_image = re.search(r"^COPY basic_auth\.ini (\S+)", dockerfile, flags=re.MULTILINE)
    assert in_image
    assert re.search(rf"MLFLOW_AUTH_CONFIG_PATH={re.escape(in_image[1])}\b", dockerfile)

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    config = auth_config.read_auth_config()
    assert config.admin_password is None
    assert config.admin_username is None
    auth_dir = str(Path(config.database_uri.removeprefix("sqlite:///")).parent)
    mounts = [volume.split(":") for volume in services["mlflow"]["volumes"]]
    assert ["mlflow-auth", auth_dir] in mounts


def test_healthchecks(services):
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert "http://127.0.0.1:5000/health" in " ".join(services["mlflow"]["healthcheck"]["test"])


# --- no committed secret --------------------------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"(?i)(password|secret|access_key)\s*[:=]\s*(\S+)")


def placeholder(value: str) -> bool:
    """Values that are not secrets: empty quotes (`""`), an env reference (`${VAR...}`, `$VAR`), a `<set-me>` token.

    A bare empty value never reaches here: the pattern needs a non-space character after `:` or `=`.
    """
    value = value.strip("\"'`,;")
    return value == "" or re.fullmatch(r"\$\{\}|\$[A-Za-z_][A-Za-z0-9_]*|<[^<>]+>", value) is not None


def committed_secrets(path: Path, root: Path = REPO) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []  # binary
    found = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        # `${VAR:?set VAR}` is compose/shell syntax; its text after the `:` is not a value. Blank it first,
        # and GitHub Actions' `${{ secrets.NAME }}` (a reference to the repository's secrets) too.
        line = re.sub(r"\$\{\{[^}]*\}\}|\$\{[^}]*\}", "${}", line)
        for match in ASSIGNMENT.finditer(line):
            if not placeholder(match[2]):
                # The value itself is not reported: a real secret must not end up in test logs.
                found.append(f"{path.relative_to(root)}:{number}: {match[1]} = <redacted>")
    return found


def test_no_secret_is_committed():
    """Every file git would commit (tracked, plus untracked but not ignored, so the new stack files count).

    Nothing is excluded by path: .env (the real secrets) is gitignored, which test_dot_env_is_gitignored checks.
    """
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = [REPO / name for name in listed.split("\0") if name]
    assert COMPOSE in paths and ENV_EXAMPLE in paths
    found = [hit for path in paths if path.is_file() for hit in committed_secrets(path)]
    assert found == []


def test_secret_scan_catches_a_literal_secret(tmp_path):
    """The control for the scan: it flags literal values and passes references and placeholders."""
    # The word is assembled at run time so that this file holds no line the scan above would flag.
    pw, key = "PASS" + "WORD", "ACCESS" + "_KEY"
    sample = tmp_path / "sample.env"
    sample.write_text(
        f"POSTGRES_{pw}=hunter2\n"
        f"      MINIO_ROOT_{pw}: minio123\n"
        f"AWS_SECRET_{key} = abc\n"
        f"POSTGRES_{pw}=\n"
        f"      POSTGRES_{pw}: ${{POSTGRES_{pw}:?set POSTGRES_{pw} in .env}}\n"
        f"uri: postgresql://${{POSTGRES_USER:?u}}:${{POSTGRES_{pw}:?set it}}@postgres/db\n"
        f"MLFLOW_TRACKING_{pw}=<set-me>\n"
        f'{pw.lower()} = "$PG{pw}"\n'
    )
    hits = committed_secrets(sample, root=tmp_path)
    assert [hit.split(":")[1] for hit in hits] == ["1", "2", "3"]
