"""The model registry from the command line.

    python -m churn.tools.registry list [--json]      versions with aliases, metrics, commit and experiment
    python -m churn.tools.registry promote VERSION    move champion to VERSION
    python -m churn.tools.registry rollback           move champion back to the previous champion
    python -m churn.tools.registry lineage VERSION    commit, experiment, data, params and metrics of VERSION
    python -m churn.tools.registry uri [ALIAS]        the champion's models:/ URI (checked to exist)
    python -m churn.tools.registry sync               make the registry agree with reports/register.json
VERSION is a number or an alias (champion, challenger). `--name` overrides register.model_name.

`sync` (run by `make run` after `dvc repro`, which may restore the register stage from its run-cache without
running it) repairs a registration cut short: the version gets the aliases it was due; a model that passed
the gate but has no version (another store, a store reset) is registered again by re-running the stage.
"""

from __future__ import annotations

import argparse
import json
import logging

from churn.errors import ChurnError
from churn.tools.versions import (
    aliases_by_version,
    all_versions,
    find_identical,
    format_table,
    get_version,
    lineage,
    open_registry,
    require_model,
    rollback,
    summary_row,
)
from churn.tracking.registry import CHAMPION, set_champion, settle

log = logging.getLogger(__name__)

# --- command line ------------------------------------------------------------------------------


def cli_settings(name: str | None) -> tuple[str, str, str]:
    """(model name, primary metric, configured store URI): --name, else params.yaml; defaults without it."""
    from pathlib import Path

    from churn.config import load_params

    if Path("params.yaml").exists():
        params = load_params()
        return name or params.register.model_name, params.evaluate.primary_metric, params.mlflow.tracking_uri
    if name is None:
        raise ChurnError("params.yaml: not found; run from the repository root or pass --name")
    return name, "roc_auc", ""


DECISION = "reports/register.json"  # the register stage's output (churn.storage.paths.DECISION)


def sync(client, name: str, decision_path: str = DECISION) -> str:
    """Make the registry agree with the register stage's decision; returns what was done, in one line."""
    from pathlib import Path

    from churn.system import dvc
    from churn.tracking.store import store_lock

    path = Path(decision_path)
    if not path.exists():
        return f"{path}: not found (the register stage has not run); nothing to check"
    decision = json.loads(path.read_text())
    if not decision.get("passed"):
        return f"{path}: the model did not pass the gate; nothing to register"
    md5 = decision.get("model_md5", "")
    version = find_identical(client, name, md5)
    if version is None:
        log.warning(
            "registry %s: no version holds the model that %s passed (model.md5 %s); registering it again "
            "(dvc repro --force --single-item register)",
            name,
            path,
            md5[:12],
        )
        dvc("repro", "--force", "--single-item", "register")
        version = find_identical(client, name, md5)
        if version is None:
            raise ChurnError(f"registry {name}: the register stage ran but registered no version with model.md5 {md5}")
        return f"registry {name}: registered version {version.version} again, as {path} decided"
    with store_lock():
        given = settle(client, name, client.get_model_version(name, version.version))
    if given:
        line = (
            f"registry {name}: version {version.version} made {' and '.join(given)}, as {path} decided "
            "(its registration had been cut short)"
        )
        log.warning(line)
        return line
    return f"registry {name}: version {version.version} agrees with {path}"


def _print(text: str) -> None:
    print(text)  # noqa: T201 - the command's output


def _command(args: argparse.Namespace) -> None:
    from mlflow.exceptions import MlflowException

    from churn.tracking.store import redact

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
        elif args.command == "sync":
            log.debug(sync(client, name))
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ChurnError(f"MLflow registry {where}: {first}") from None


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="registered model name (default: register.model_name in params.yaml)")
    top = argparse.ArgumentParser(prog="python -m churn.tools.registry", description="The model registry.")
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
    sub.add_parser("sync", parents=[common], help="make the registry agree with reports/register.json")
    return top


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    args = parser().parse_args(argv)
    run_cli(lambda: _command(args))


if __name__ == "__main__":
    main()
