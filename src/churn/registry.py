"""The model registry: the validation gate, idempotent versions, and champion/challenger aliases.

Aliases, never the deprecated stages: every new version that passes the gate becomes `challenger`;
`champion` moves to it only when there is no champion or it beats the champion on the primary metric.
Every move of `champion` (by the register stage, `promote` or `rollback`) is recorded in the registered
model's tag `champion.history` (comma-separated versions, oldest first), so `rollback` knows the previous one.

Command line (run from the repository root; the store is resolved as in churn.tracking):
    python -m churn.registry list [--json]      versions with aliases, metrics, commit and experiment
    python -m churn.registry promote VERSION    move champion to VERSION
    python -m churn.registry rollback           move champion back to the previous champion
    python -m churn.registry lineage VERSION    commit, experiment, data, params and metrics of VERSION
    python -m churn.registry uri [ALIAS]        the champion's models:/ URI (checked to exist)
VERSION is a number or an alias (champion, challenger). `--name` overrides register.model_name.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churn.errors import ChurnError
from churn.params import LOWER_IS_BETTER, RegisterParams

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HASH_TAG = "model.md5"
METRIC_TAG = "metric."
HISTORY_TAG = "champion.history"
HISTORY_LIMIT = 200  # versions kept in the history tag (a tag value holds at most 5,000 characters)


def gate(metrics: dict[str, float], params: RegisterParams) -> dict:
    """The validation thresholds from params, each with the value seen and whether it passed."""
    checks = {
        "roc_auc": {
            "value": metrics["roc_auc"],
            "min": params.min_roc_auc,
            "passed": metrics["roc_auc"] >= params.min_roc_auc,
        },
        "log_loss": {
            "value": metrics["log_loss"],
            "max": params.max_log_loss,
            "passed": metrics["log_loss"] <= params.max_log_loss,
        },
    }
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks}


def improvement(candidate: float, incumbent: float, metric: str) -> float:
    """How much better the candidate is (positive = better), whichever direction the metric runs."""
    return incumbent - candidate if metric in LOWER_IS_BETTER else candidate - incumbent


def find_identical(client: MlflowClient, name: str, model_md5: str):
    """The existing version with the same model bytes, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(HASH_TAG) == model_md5), None)


def champion_version(client: MlflowClient, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@dataclass
class Registration:
    version: str | None
    created: bool
    champion: bool
    reason: str


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    model_md5: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    description: str,
    primary_metric: str,
    min_improvement: float,
) -> Registration:
    """Register `model_uri` unless an identical version exists; then set challenger and maybe champion."""
    from mlflow.exceptions import MlflowException

    same = find_identical(client, name, model_md5)
    if same is not None:
        return Registration(same.version, False, False, f"identical to version {same.version}; no new version")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Churn probability from raw customer columns.")
    version_tags = {**tags, HASH_TAG: model_md5, **{f"{METRIC_TAG}{k}": str(v) for k, v in metrics.items()}}
    # A tracking server insists that a `models:/<model id>` source comes with its model id (sqlite does not).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    created = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=version_tags, description=description, model_id=model_id
    )
    version = created.version
    client.set_registered_model_alias(name, CHALLENGER, version)

    incumbent = champion_version(client, name)
    if incumbent is None:
        set_champion(client, name, version)
        return Registration(version, True, True, "first version to pass the gate")
    incumbent_value = float(incumbent.tags.get(f"{METRIC_TAG}{primary_metric}", "nan"))
    gain = improvement(metrics[primary_metric], incumbent_value, primary_metric)
    if gain == gain and gain > 0 and gain >= min_improvement:  # gain == gain: not NaN
        set_champion(client, name, version)
        return Registration(version, True, True, f"beats version {incumbent.version} on {primary_metric} by {gain:.6f}")
    return Registration(
        version,
        True,
        False,
        f"{primary_metric} {metrics[primary_metric]:.6f} does not beat champion version "
        f"{incumbent.version} ({incumbent_value:.6f}) by {min_improvement}",
    )


# --- champion history, promotion and rollback ----------------------------------------------------


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


def set_champion(client: MlflowClient, name: str, version: str) -> str | None:
    """Move champion to `version` and record the move; returns the previous champion's version, if any."""
    found = champion_version(client, name)
    previous = str(found.version) if found is not None else None
    history = champion_history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # moved outside this module (e.g. in the UI): keep it reachable
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if not history or history[-1] != str(version):
        history.append(str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_LIMIT:]))
    return previous


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


def version_metrics(version) -> dict[str, float]:
    return {k.removeprefix(METRIC_TAG): float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}


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


# --- command line ------------------------------------------------------------------------------


def open_registry(configured_uri: str = "") -> tuple[MlflowClient, str]:
    """A client on the project's store (resolved as churn.tracking does: params `mlflow.tracking_uri`,
    else MLFLOW_TRACKING_URI, else the repository's sqlite file); the store must already exist."""
    from pathlib import Path

    import mlflow
    from mlflow import MlflowClient

    from churn.tracking import preflight, redact, tracking_uri

    uri = tracking_uri(configured=configured_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ChurnError(f"no MLflow store at {redact(uri)}; run `make run` first, or set MLFLOW_TRACKING_URI")
    preflight(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def cli_settings(name: str | None) -> tuple[str, str, str]:
    """(model name, primary metric, configured store URI): --name, else params.yaml; defaults without it."""
    from pathlib import Path

    from churn.params import load_params

    if Path("params.yaml").exists():
        params = load_params()
        return name or params.register.model_name, params.evaluate.primary_metric, params.mlflow.tracking_uri
    if name is None:
        raise ChurnError("params.yaml: not found; run from the repository root or pass --name")
    return name, "roc_auc", ""


def _print(text: str) -> None:
    print(text)  # noqa: T201 - the command's output


def _command(args: argparse.Namespace) -> None:
    from mlflow.exceptions import MlflowException

    from churn.tracking import redact

    name, primary, configured_uri = cli_settings(args.name)
    client, uri = open_registry(configured_uri)
    where = redact(uri)
    try:
        if args.command == "list":
            require_model(client, name, where)
            aliases = aliases_by_version(client, name)
            rows = [summary_row(v, aliases.get(str(v.version), [])) for v in all_versions(client, name)]
            shown = list(dict.fromkeys([primary, "roc_auc", "pr_auc", "f1", "log_loss"]))
            _print(json.dumps(rows, indent=2) if args.json else format_table(rows, shown))
        elif args.command == "promote":
            version = get_version(client, name, args.version, where)
            previous = set_champion(client, name, version.version)
            log.info("%s: champion %s -> %s", name, previous or "none", version.version)
        elif args.command == "rollback":
            require_model(client, name, where)
            old, new = rollback(client, name)
            log.info("%s: champion rolled back %s -> %s", name, old, new)
        elif args.command == "lineage":
            _print(json.dumps(lineage(get_version(client, name, args.version, where)), indent=2))
        elif args.command == "uri":
            get_version(client, name, args.alias, where)
            _print(f"models:/{name}@{args.alias}")
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ChurnError(f"MLflow registry {where}: {first}") from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="registered model name (default: register.model_name in params.yaml)")
    top = argparse.ArgumentParser(prog="python -m churn.registry", description="The model registry.")
    sub = top.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", parents=[common], help="versions with aliases and metrics")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    promote = sub.add_parser("promote", parents=[common], help="move champion to a version")
    promote.add_argument("version", help="version number or alias")
    sub.add_parser("rollback", parents=[common], help="move champion back to the previous champion")
    show = sub.add_parser("lineage", parents=[common], help="commit, experiment, data, params, metrics")
    show.add_argument("version", help="version number or alias")
    uri = sub.add_parser("uri", parents=[common], help="print the models:/ URI of an alias (default champion)")
    uri.add_argument("alias", nargs="?", default=CHAMPION)
    return top


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    args = parser().parse_args(argv)
    run_cli(lambda: _command(args))


if __name__ == "__main__":
    main()
