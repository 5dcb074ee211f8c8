"""The model registry for the tools: look-ups with one-line errors, the champion's history and rollback, and
what a version is (summary rows, lineage, the table of `churn.tools.registry list`).

The register stage's side (the gate, registering a version, its aliases, `set_champion`) is
churn.tracking.registry; this module is imported by tools only, so changing it re-runs no stage.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError
from churn.tracking.registry import CHAMPION, HASH_TAG, HISTORY_TAG, METRIC_TAG, version_metrics

if TYPE_CHECKING:
    from mlflow import MlflowClient


# --- look-ups, the champion's history and rollback ---------------------------------------------------------


def find_identical(client: MlflowClient, name: str, model_md5: str):
    """The existing version with the same model bytes, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(HASH_TAG) == model_md5), None)


def champion_version(client: MlflowClient, name: str):
    """The version the champion alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def require_model(client: MlflowClient, name: str, where: str = "the registry"):
    """The registered model `name`, or a one-line error listing the names that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise ChurnError(
            f"no registered model {name!r} in {where} (registered: {', '.join(names) or 'none'}; "
            "a model is registered by the register stage once it passes the gate)"
        ) from None


def all_versions(client: MlflowClient, name: str) -> list:
    """Every version of `name`, oldest first."""
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def get_version(client: MlflowClient, name: str, ref: str, where: str = "the registry"):
    """The version `ref` (a number, or an alias such as champion) of `name`; a one-line error if unknown."""
    from mlflow.exceptions import MlflowException

    require_model(client, name, where)
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, str(ref))
    except MlflowException:
        known = ", ".join(str(v.version) for v in all_versions(client, name)) or "none"
        raise ChurnError(f"{name}: no version or alias {ref!r} in {where} (versions: {known})") from None


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """The versions that have been champion, oldest first, as recorded in the `champion.history` tag."""
    text = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in text.split(",") if v]


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move champion back to the champion before it; returns (from version, to version)."""
    current = champion_version(client, name)
    if current is None:
        raise ChurnError(f"{name}: has no champion to roll back")
    history = champion_history(client, name)
    existing = {str(v.version) for v in all_versions(client, name)}
    while history and (history[-1] == str(current.version) or history[-1] not in existing):
        history.pop()
    if not history:
        raise ChurnError(f"{name}: no earlier champion recorded before version {current.version}; nothing to roll back")
    target = history[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return str(current.version), target


# --- what a version is: summary rows and lineage -----------------------------------------------


def _created(version) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def aliases_by_version(client: MlflowClient, name: str) -> dict[str, list[str]]:
    """Version -> its aliases (search results do not carry them; the registered model does)."""
    out: dict[str, list[str]] = {}
    for alias, version in sorted(client.get_registered_model(name).aliases.items()):
        out.setdefault(str(version), []).append(alias)
    return out


def summary_row(version, aliases: list[str]) -> dict[str, Any]:
    """One version as a row of `list`: aliases, creation time, family, metrics, commit, experiment."""
    tags = version.tags
    return {
        "version": str(version.version),
        "aliases": sorted(aliases),
        "created": _created(version),
        "model_type": tags.get("model.type", ""),
        "metrics": version_metrics(version),
        "git_commit": tags.get("git.commit", ""),
        "experiment": tags.get("dvc.exp_name", ""),
        "run_id": version.run_id or "",
    }


def lineage(version) -> dict[str, Any]:
    """Where a version came from: commit, DVC experiment and baseline, data, params and metrics."""
    try:
        described = json.loads(version.description or "{}")
    except json.JSONDecodeError:
        described = {}
    if not isinstance(described, dict):
        described = {}
    tags = {k: v for k, v in sorted(version.tags.items()) if not k.startswith(METRIC_TAG)}
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": sorted(version.aliases),
        "created": _created(version),
        "run_id": version.run_id,
        "source": version.source,
        "tags": tags,
        "metrics": version_metrics(version),
        "params": described.get("params", {}),
    }


def format_table(rows: list[dict[str, Any]], metric_names: list[str]) -> str:
    header = ["version", "aliases", "created (UTC)", "model", *metric_names, "commit", "experiment"]
    lines = [header]
    for row in rows:
        metrics = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metric_names]
        lines.append(
            [
                row["version"],
                ",".join(row["aliases"]) or "-",
                row["created"],
                row["model_type"] or "-",
                *metrics,
                row["git_commit"][:8] or "-",
                row["experiment"] or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def open_registry(configured_uri: str = "") -> tuple[MlflowClient, str]:
    """A client on the project's store (resolved as churn.tracking.store does: params `mlflow.tracking_uri`,
    else MLFLOW_TRACKING_URI, else the repository's sqlite file); the store must already exist."""
    from pathlib import Path

    import mlflow
    from mlflow import MlflowClient

    from churn.tracking.store import preflight, redact, tracking_uri

    uri = tracking_uri(configured=configured_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ChurnError(f"no MLflow store at {redact(uri)}; run `make run` first, or set MLFLOW_TRACKING_URI")
    preflight(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri
