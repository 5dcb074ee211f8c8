"""The model registry as the register stage uses it: the validation gate, idempotent versions, and
champion/challenger aliases.

Aliases, never the deprecated stages: every new version that passes the gate becomes `challenger`;
`champion` moves to it only when there is no champion or it beats the champion on the primary metric.
Every move of `champion` (`set_champion`: by the register stage, or `promote` and `rollback`) is recorded in the
registered model's tag `champion.history` (comma-separated versions, oldest first), so `rollback` knows the
previous one.

The gate is MLflow's own: `MetricThreshold`s checked by `mlflow.validate_evaluation_results`, with the
thresholds from params (`register.thresholds`) and, against the champion, `min_absolute_change`. A champion
trained on other data (its `data.md5` tag differs) is not compared unless `register.allow_other_data`.

A registration cut short (the process killed between creating the version and moving its aliases) heals: each
new version carries the aliases it is due (`registry.aliases`) from its creation, and `registry.settled` once
they are set; `settle` gives an unsettled version what it is still due, whenever the register stage finds it
again or `churn.tools.registry sync` (run by `make run`) checks the registry against reports/register.json.
Promotion, rollback, look-ups and tables serve only the tools: churn.tools.versions, so that changing them
re-runs no stage. The command line is churn.tools.registry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from churn.config import LOWER_IS_BETTER

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models import MetricThreshold

    from churn.config import Threshold

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HASH_TAG = "model.md5"
METRIC_TAG = "metric."
HISTORY_TAG = "champion.history"
DUE_TAG = "registry.aliases"  # on a version: the aliases the register stage decided it gets
SETTLED_TAG = "registry.settled"  # on a version: "true" once it has them
DATA_TAG = "data.md5"
HISTORY_LIMIT = 200  # versions kept in the history tag (a tag value holds at most 5,000 characters)


# --- the gate: MLflow's MetricThreshold on the test metrics, and on the champion's ----------------


def gate(
    metrics: Mapping[str, float],
    thresholds: Mapping[str, Threshold],
    champion: Mapping[str, float] | None = None,
    *,
    primary_metric: str = "",
    min_improvement: float = 0.0,
) -> dict[str, Any]:
    """Check the test metrics against the thresholds from params (inclusive) and, when the champion's metrics
    are given, whether the candidate beats it on `primary_metric`: strictly when `min_improvement` is 0, else
    by at least `min_improvement`. The decision, as reports/register.json holds it:
    `{"passed", "checks": {metric: {"value", "min" or "max", "passed"}}}`, plus, with a champion,
    `"champion": {"metric", "value", "champion", "min_improvement", "passed"}`; `passed` means all passed."""
    from mlflow.models import MetricThreshold

    checks = {}
    for name, threshold in thresholds.items():
        rule = MetricThreshold(threshold=float(threshold.value), greater_is_better=threshold.greater_is_better)
        bound = "min" if threshold.greater_is_better else "max"
        checks[name] = {"value": metrics.get(name), bound: threshold.value, "passed": _validates(name, rule, metrics)}
    decision: dict[str, Any] = {"passed": all(c["passed"] for c in checks.values()), "checks": checks}
    if champion is None:
        return decision

    better = primary_metric not in LOWER_IS_BETTER
    value, best = _finite(metrics.get(primary_metric)), _finite(champion.get(primary_metric))
    beats = False
    if value is not None and best is not None:
        # MLflow passes a change equal to min_absolute_change and refuses 0: without a margin, the distance to
        # the next float makes "better than the champion" strict.
        step = min_improvement or abs(math.nextafter(best, math.inf if better else -math.inf) - best)
        rule = MetricThreshold(min_absolute_change=float(step), greater_is_better=better)
        beats = _validates(primary_metric, rule, {primary_metric: value}, {primary_metric: best})
    decision["champion"] = {
        "metric": primary_metric,
        "value": metrics.get(primary_metric),
        "champion": champion.get(primary_metric),
        "min_improvement": min_improvement,
        "passed": beats,
    }
    decision["passed"] = decision["passed"] and beats
    return decision


def failures(decision: dict[str, Any]) -> list[str]:
    """One line per failed check of a `gate` decision, e.g. `roc_auc = 0.65: needs >= 0.7`."""
    lines = []
    for name, check in decision["checks"].items():
        if check["passed"]:
            continue
        bound = f">= {check['min']}" if "min" in check else f"<= {check['max']}"
        missing = check["value"] is None
        lines.append(f"{name}: missing from the metrics" if missing else f"{name} = {check['value']}: needs {bound}")
    versus = decision.get("champion")
    if versus is not None and not versus["passed"]:
        name, value, best, step = versus["metric"], versus["value"], versus["champion"], versus["min_improvement"]
        at_least, plus = (">=", "+") if name not in LOWER_IS_BETTER else ("<=", "-")
        if _finite(value) is None or _finite(best) is None:
            lines.append(f"{name}: no number to compare (candidate {value}, champion {best})")
        else:
            needs = f"{at_least} champion's {best} {plus} {step}" if step else f"{at_least[0]} champion's {best}"
            lines.append(f"{name} = {value}: needs {needs}")
    for name, check in decision.get("serving", {}).get("checks", {}).items():  # tracking.models.check_serving
        if not check["passed"]:
            lines.append(f"serving {name}: {check['error']}")
    return lines


def _validates(name: str, rule: MetricThreshold, metrics: Mapping[str, float], baseline: dict | None = None) -> bool:
    """Whether `mlflow.validate_evaluation_results` passes `metrics[name]` under `rule` (one metric per call,
    so that the decision knows which failed without parsing MLflow's multi-line message)."""
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException, validate_evaluation_results

    candidate = {name: metrics[name]} if name in metrics else {}
    chatty = logging.getLogger("mlflow.models.evaluation.validation")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # two INFO lines per call, "Model validation passed!" even for one metric
    try:
        validate_evaluation_results(
            {name: rule},
            EvaluationResult(candidate, {}, run_id=""),
            EvaluationResult(baseline, {}, run_id="") if baseline is not None else None,
        )
    except ModelValidationFailedException:
        return False
    finally:
        chatty.setLevel(level)
    return True


def _finite(value: object) -> float | None:
    """A metric as a float, or None if missing or not finite (MLflow's Decimal comparison raises on NaN)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- registering a version ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A logged model that passed the gate: where it is, the run that logged it, its hash, test metrics,
    lineage tags and description."""

    model_uri: str
    run_id: str
    model_md5: str
    metrics: dict[str, float]
    tags: dict[str, str]
    description: str


@dataclass(frozen=True)
class Registration:
    version: str | None
    created: bool
    champion: bool
    reason: str


def other_data(candidate: Mapping[str, str], incumbent: Mapping[str, str]) -> str | None:
    """Why two versions' test metrics cannot be compared (their `data.md5` tags differ), or None."""
    ours, theirs = candidate.get(DATA_TAG, ""), incumbent.get(DATA_TAG, "")
    if ours and theirs and ours != theirs:
        return f"trained on other data (data.md5 {theirs[:8]}, this one {ours[:8]})"
    return None


@dataclass
class Snapshot:
    """What the registry holds for one name, read once: its versions (with tags), aliases (alias -> version)
    and champion history. Calls that change the registry through this module keep it current."""

    versions: list
    aliases: dict[str, str]
    history: list[str]

    def version(self, number: str | int | None):
        return next((v for v in self.versions if str(v.version) == str(number)), None) if number else None


def snapshot(client: MlflowClient, name: str, create: bool = False) -> Snapshot:
    """The registry's state for `name` in two requests (the versions, the registered model); with `create`, the
    registered model is created when missing (else a missing one reads as empty)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        if create:
            try:
                client.create_registered_model(name, description="Churn probability from raw customer columns.")
            except MlflowException:  # created meanwhile by another worker (the store lock is per machine)
                return snapshot(client, name)
        return Snapshot([], {}, [])
    versions = client.search_model_versions(f"name = '{name}'")
    aliases = {alias: str(number) for alias, number in model.aliases.items()}
    history = [v for v in model.tags.get(HISTORY_TAG, "").split(",") if v]
    return Snapshot(versions, aliases, history)


def register(
    client: MlflowClient,
    name: str,
    candidate: Candidate,
    *,
    primary_metric: str,
    min_improvement: float,
    allow_other_data: bool = False,
) -> Registration:
    """Register the candidate unless an identical version exists; then make it challenger, and champion when
    there is none or it beats the champion on `primary_metric` (see `gate`). A champion trained on other data
    is compared only with `allow_other_data`. An identical version still gets the aliases it was due (a
    registration cut short heals here). Requests: the registry read once (`snapshot`), then only changes."""
    state = snapshot(client, name, create=True)
    same = next((v for v in state.versions if v.tags.get(HASH_TAG) == candidate.model_md5), None)
    if same is not None:
        reason = f"identical to version {same.version}; no new version"
        healed = settle(client, name, same, state)
        if healed:
            reason += f"; its registration had been cut short: made it {' and '.join(healed)}"
        return Registration(same.version, False, state.aliases.get(CHAMPION) == str(same.version), reason)

    incumbent = state.version(state.aliases.get(CHAMPION))
    if incumbent is None:
        wins, reason = True, "first version to pass the gate"
    elif (why := other_data(candidate.tags, incumbent.tags)) and not allow_other_data:
        wins = False
        reason = (
            f"not compared with champion version {incumbent.version}, {why}; "
            "set register.allow_other_data: true to compare, or promote it"
        )
    else:
        verdict = gate(
            candidate.metrics,
            {},
            version_metrics(incumbent),
            primary_metric=primary_metric,
            min_improvement=min_improvement,
        )
        wins = verdict["passed"]
        if wins:
            gain = abs(verdict["champion"]["value"] - verdict["champion"]["champion"])
            reason = f"beats version {incumbent.version} on {primary_metric} by {gain:.6f}"
        else:
            reason = f"does not beat champion version {incumbent.version}: {'; '.join(failures(verdict))}"
    due = [CHALLENGER, CHAMPION] if wins else [CHALLENGER]

    metric_tags = {f"{METRIC_TAG}{k}": str(v) for k, v in candidate.metrics.items()}
    uri = candidate.model_uri
    # A tracking server insists that a `models:/<model id>` source comes with its model id (sqlite does not).
    model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
    version = client.create_model_version(
        name,
        source=uri,
        run_id=candidate.run_id,
        tags={**candidate.tags, HASH_TAG: candidate.model_md5, **metric_tags, DUE_TAG: ",".join(due)},
        description=candidate.description,
        model_id=model_id,
        await_creation_for=0,  # SQL stores (and a server on one) create versions READY
    )
    state.versions.append(version)
    settle(client, name, version, state)
    return Registration(version.version, True, wins, reason)


def settle(client: MlflowClient, name: str, version, state: Snapshot | None = None) -> list[str]:
    """Give a version the aliases it is due and has not had yet; returns those it was given (none once it
    is settled). Due: those its `registry.aliases` tag names, except an alias that has since moved to a newer
    version (a later registration wins); a version from before that tag gets champion (and challenger) only
    when the registry has none. The version is then marked settled, so that later moves (promote, rollback)
    are never undone. `state`: the registry as already read (else it is read here)."""
    tags = version.tags
    if tags.get(SETTLED_TAG) == "true":
        return []
    state = state or snapshot(client, name)
    current = state.aliases
    number = int(version.version)
    if DUE_TAG in tags:
        due = [alias for alias in tags[DUE_TAG].split(",") if alias]
    else:
        due = [alias for alias in (CHALLENGER, CHAMPION) if alias not in current]
    given = []
    for alias in due:
        holder = current.get(alias)
        if holder is not None and int(holder) >= number:
            continue  # already there, or moved on to a newer version since
        if alias == CHAMPION:
            set_champion(client, name, version.version, state)
        else:
            client.set_registered_model_alias(name, alias, version.version)
            current[alias] = str(version.version)
        given.append(alias)
    client.set_model_version_tag(name, version.version, SETTLED_TAG, "true")
    return given


# --- the champion alias and its history ------------------------------------------------------


def set_champion(client: MlflowClient, name: str, version: str, state: Snapshot | None = None) -> str | None:
    """Move champion to `version` and record the move; returns the previous champion's version, if any.
    `state`: the registry as already read (else it is read here); kept current."""
    state = state or snapshot(client, name)
    previous = state.aliases.get(CHAMPION)
    history = state.history
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # moved outside this module (e.g. in the UI): keep it reachable
    client.set_registered_model_alias(name, CHAMPION, str(version))
    state.aliases[CHAMPION] = str(version)
    if not history or history[-1] != str(version):
        history.append(str(version))
    del history[:-HISTORY_LIMIT]
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return previous


def version_metrics(version) -> dict[str, float]:
    return {k.removeprefix(METRIC_TAG): float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}
