"""The model registry: the validation gate, idempotent versions, and champion/challenger aliases.

Aliases, never the deprecated stages: every new version that passes the gate becomes `challenger`;
`champion` moves to it only when there is no champion or it beats the champion on the primary metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from churn.params import LOWER_IS_BETTER, RegisterParams

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HASH_TAG = "model.md5"
METRIC_TAG = "metric."


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
    created = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=version_tags, description=description
    )
    version = created.version
    client.set_registered_model_alias(name, CHALLENGER, version)

    incumbent = champion_version(client, name)
    if incumbent is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Registration(version, True, True, "first version to pass the gate")
    incumbent_value = float(incumbent.tags.get(f"{METRIC_TAG}{primary_metric}", "nan"))
    gain = improvement(metrics[primary_metric], incumbent_value, primary_metric)
    if gain == gain and gain > 0 and gain >= min_improvement:  # gain == gain: not NaN
        client.set_registered_model_alias(name, CHAMPION, version)
        return Registration(version, True, True, f"beats version {incumbent.version} on {primary_metric} by {gain:.6f}")
    return Registration(
        version,
        True,
        False,
        f"{primary_metric} {metrics[primary_metric]:.6f} does not beat champion version "
        f"{incumbent.version} ({incumbent_value:.6f}) by {min_improvement}",
    )
