"""The model card (reports/model_card.md): what the model is, what it was trained and tested on, how well it does
with what uncertainty, where it does worse, and what the gate decided; from the pipeline's own reports only, so
the same inputs give the same card (no run ids, no dates)."""

from __future__ import annotations

CI_NAMES = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "f1": "F1", "log_loss": "log loss", "brier": "Brier"}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def model_card(
    *,
    model_name: str,
    family: str,
    hyperparameters: dict,
    calibration: str,
    data: dict,
    quality: dict,
    metrics: dict,
    slices: dict,
    decision: dict,
    threshold: float,
    top_share: float,
    intended_use: str,
    limits: list[str],
) -> str:
    """The card as Markdown. `data`: raw path, md5, target, positive label, numerical and categorical columns);
    `quality`: reports/data_quality.json; `metrics`: reports/metrics.json; `slices`: reports/slices.json;
    `decision`: the gate's decision (reports/register.json without serving details)."""
    lines = [
        f"# Model card: {model_name}",
        "",
        "## Intended use",
        "",
        intended_use,
        "",
        "## Model",
        "",
        f"- Family: {family} ({', '.join(f'{k}={v}' for k, v in hyperparameters.items())}); "
        f"calibration: {calibration}.",
        f"- Input: raw columns {', '.join(data['numerical'])} (numbers) and {', '.join(data['categorical'])} "
        f"(categories); output: the probability that {data['target']} is {data['positive_label']!r}, "
        f"labelled positive at {threshold:g}.",
        "",
        "## Data",
        "",
        f"- {data['raw_path']}: {quality.get('rows_used', 'n/a')} rows used of "
        f"{quality.get('rows_raw', 'n/a')}; {quality.get('rows_test', 'n/a')} held out for test by a keyed hash "
        "of the ids.",
    ]
    shares = quality.get("class_shares", {})
    if shares:
        train, test = shares.get("train", {}), shares.get("test", {})
        lines.append(f"- Positive share: train {train.get('1', 'n/a')}, test {test.get('1', 'n/a')}.")
    lines += [
        "",
        "## Test metrics (95% bootstrap intervals where given)",
        "",
        "| metric | value | interval |",
        "|---|---|---|",
    ]
    for name in ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "brier"):
        if name not in metrics:
            continue
        low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
        interval = f"[{_number(low)}, {_number(high)}]" if low is not None else ""
        lines.append(f"| {CI_NAMES.get(name, name)} | {_number(metrics[name])} | {interval} |")
    for name, label in (
        ("ece", "expected calibration error"),
        ("precision_at_k", f"precision in the top {top_share:.0%} of scores"),
        ("recall_at_k", f"recall in the top {top_share:.0%} of scores"),
        ("worst_slice_roc_auc", "lowest ROC AUC over the slices"),
    ):
        if name in metrics:
            lines.append(f"| {label} | {_number(metrics[name])} | |")
    if slices:
        lines += ["", "## Slices", "", "| column | value | rows | positives | ROC AUC | recall |", "|---" * 6 + "|"]
        for column, values in slices.items():
            for value, row in values.items():
                lines.append(
                    f"| {column} | {value} | {row['rows']} | {row['positives']} | {_number(row['roc_auc'])} "
                    f"| {_number(row['recall'])} |"
                )
    lines += ["", "## Gate", "", f"- {'Passed' if decision.get('passed') else 'Failed'}:"]
    for name, check in decision.get("checks", {}).items():
        bound = f">= {check['min']}" if "min" in check else f"<= {check['max']}"
        lines.append(f"  - {name} = {_number(check['value'])} (needs {bound}): {'pass' if check['passed'] else 'FAIL'}")
    lines += [
        "",
        "## Limits",
        "",
        *(f"- {limit}" for limit in limits),
        "- The intervals cover resampling of this test split only, not a change in the population: scoring "
        "measures drift against the training profile the registered model carries (churn.tools.predict).",
        "- Slices with few rows have wide uncertainty; a slice without both classes has no ROC AUC.",
        "",
    ]
    return "\n".join(lines)
