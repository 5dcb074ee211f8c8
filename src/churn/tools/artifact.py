"""Registry versions as versions of the DVC artifact `churn-model` (dvc.yaml `artifacts:`).

    python -m churn.tools.artifact tag [VERSION] [--rev REV] [--name NAME]      (make artifact VERSION=.. REV=..)

VERSION (a number or an alias, champion by default) of the registered model becomes version vVERSION.0.0 of
the artifact: an annotated git tag `churn-model@vN.0.0` (GTO's format, which `dvc artifacts get` reads) on REV
(HEAD by default). REV must hold that very model: its dvc.lock records models/model.pkl with the md5 the
version was registered with (tag `dvc.artifact.md5`), so commit the pipeline's results first. The registry
version then names the artifact's git rev, version and download command (tags `dvc.artifact.rev`,
`dvc.artifact.version`, `dvc.artifact.get`). Share it with `git push origin churn-model@vN.0.0` and
`bin/dvc push`; anyone can then run `dvc artifacts get <repository> churn-model [--rev vN.0.0]`.
"""

from __future__ import annotations

import argparse
import logging

from churn.errors import ChurnError
from churn.system import git
from churn.tools.experiments import lock_outs
from churn.tracking.models import MODEL_ARTIFACT, MODEL_ARTIFACT_FILE, MODEL_ARTIFACT_PATH

log = logging.getLogger(__name__)

MD5_TAG = "dvc.artifact.md5"
REV_TAG = "dvc.artifact.rev"
VERSION_TAG = "dvc.artifact.version"
GET_TAG = "dvc.artifact.get"


def artifact_version(registry_version: str) -> str:
    """The artifact version standing for a registry version: semantic, as GTO requires (3 -> v3.0.0)."""
    return f"v{int(registry_version)}.0.0"


def git_tag_name(registry_version: str) -> str:
    return f"{MODEL_ARTIFACT}@{artifact_version(registry_version)}"


def repository_url() -> str:
    """Where teammates get the repository from: the `origin` remote, else this clone's folder."""
    return git("remote", "get-url", "origin", check=False) or git("rev-parse", "--show-toplevel")


def commit_holding(rev: str, md5: str) -> str:
    """The commit `rev` names, checked to hold the model whose models/model.pkl has this md5."""
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not commit:
        raise ChurnError(f"{rev}: not a commit of this repository")
    held = lock_outs(commit).get(MODEL_ARTIFACT_FILE)
    if held != md5:
        raise ChurnError(
            f"{rev} ({commit[:8]}) does not hold this model: its dvc.lock records {MODEL_ARTIFACT_FILE} "
            f"{held or 'nowhere'}, the registry version {md5}; commit the pipeline's results (dvc.lock) first, "
            "or pass --rev <the commit that holds them>"
        )
    return commit


def tag(client, name: str, ref: str, rev: str) -> dict[str, str]:
    """Tag the commit holding registry version `ref` of `name` as its artifact version; returns the version's
    new dvc.artifact.* tags."""
    from churn.tools.versions import get_version

    version = get_version(client, name, ref)
    number = str(version.version)
    md5 = version.tags.get(MD5_TAG)
    if not md5:
        raise ChurnError(
            f"{name} version {number} has no {MD5_TAG} tag (registered before the model was a DVC artifact); "
            "only versions registered since can be tagged"
        )
    commit = commit_holding(rev, md5)
    tag_name = git_tag_name(number)
    existing = git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag_name}^{{commit}}", check=False)
    if existing and existing != commit:
        raise ChurnError(f"git tag {tag_name} already exists on {existing[:8]}, not on {commit[:8]}")
    if not existing:
        message = f"{name} version {number} in the MLflow registry (models:/{name}/{number}), md5 {md5}"
        git("tag", "-a", tag_name, "-m", message, commit)
    tags = {
        REV_TAG: commit,
        VERSION_TAG: artifact_version(number),
        GET_TAG: f"dvc artifacts get {repository_url()} {MODEL_ARTIFACT} --rev {artifact_version(number)}",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, number, key, value)
    log.info(
        "%s version %s is DVC artifact %s (%s) at %s; share it: git push origin %s && bin/dvc push",
        name,
        number,
        tag_name,
        MODEL_ARTIFACT_PATH,
        commit[:8],
        tag_name,
    )
    return tags


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    parser = argparse.ArgumentParser(prog="python -m churn.tools.artifact", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tagging = commands.add_parser("tag", help="tag the commit holding a registry version as its artifact version")
    tagging.add_argument("version", nargs="?", default="champion", help="a version number or alias (champion)")
    tagging.add_argument("--rev", default="HEAD", help="the commit that holds the model (HEAD)")
    tagging.add_argument("--name", default=None, help="registered model name (params register.model_name)")
    args = parser.parse_args(argv)

    def work() -> None:
        from churn.config import load_params
        from churn.tools.versions import open_registry

        params = load_params()
        client, _ = open_registry(params.mlflow.tracking_uri)
        tag(client, args.name or params.register.model_name, args.version, args.rev)

    run_cli(work)


if __name__ == "__main__":
    main()
