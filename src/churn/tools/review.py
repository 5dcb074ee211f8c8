"""A review report for a pull request: what this workspace changes against a base revision, in Markdown.

    python -m churn.tools.review [--base main] [--output reports/review.md]        (make report [BASE=rev])

The report holds the params that differ (`dvc params diff`), the metrics that differ (`dvc metrics diff`,
test and cross-validation), this workspace's model against the registry's champion (test metrics, the
register stage's gate and serving checks), and the plots: the ROC and precision-recall curves of both
revisions (from the plot data committed with each), the workspace's figures and `dvc plots diff`'s page, all
linked relative to the report. It reads what the pipeline wrote and runs no stage: run `make run` first for
the figures, the gate's decision and a registry to compare with. A base that is not a local branch is looked
up as origin/<base> (a CI checkout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from churn.errors import ChurnError
from churn.storage import paths
from churn.system import atomic_path, dvc, first_line, git

log = logging.getLogger(__name__)

OUTPUT = Path("reports/review.md")
CURVES = (  # title, plot file, its key, x, y, diagonal
    ("ROC", paths.ROC, "roc", "fpr", "tpr", True),
    ("Precision-recall", paths.PRC, "prc", "recall", "precision", False),
)
FIGURES = (("Confusion matrix (workspace)", paths.FIG_CONFUSION), ("Feature importance", paths.FIG_IMPORTANCE))


def resolve_base(base: str) -> tuple[str, str]:
    """(the revision name DVC is given, its commit): `base`, else `origin/<base>`; one line if neither exists."""
    for name in (base, f"origin/{base}"):
        commit = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        if commit:
            return name, commit
    raise ChurnError(f"base revision {base!r} not found (nor origin/{base}); fetch it, or pass BASE=<rev>")


def dvc_table(*args: str) -> str:
    """A `dvc ... --md` table, or "" when DVC finds nothing to show (no output, or a header without rows)."""
    table = dvc(*args, "--md").stdout.strip()
    return table if len(table.splitlines()) > 2 else ""


# --- the registry's champion against this workspace's model --------------------------------------------


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def champion_section(params, workspace: dict[str, float], decision: dict | None) -> list[str]:
    """Test metrics of the champion and of this workspace's model, and what the register stage decided."""
    from churn.tools.versions import (
        aliases_by_version,
        champion_history,
        champion_version,
        find_identical,
        get_version,
        open_registry,
    )
    from churn.tracking.registry import failures, version_metrics

    name = params.register.model_name
    lines: list[str] = []
    if decision is not None:
        gate = "passed" if decision.get("passed") else "failed: " + "; ".join(failures(decision))
        lines.append(f"- The register stage's gate: {gate}.")
        serving = decision.get("serving", {}).get("checks", {})
        if serving:
            said = [f"{k} {'ok' if c['passed'] else 'FAILED'}" for k, c in serving.items()]
            lines.append(f"- Serving checks (mlflow.models.validate_serving_input): {', '.join(said)}.")
    else:
        lines.append(f"- No {paths.DECISION} in the workspace: the register stage has not run here.")
    try:
        client, _ = open_registry(params.mlflow.tracking_uri)
        champion = champion_version(client, name)
        same = find_identical(client, name, decision.get("model_md5", "")) if decision else None
        if champion is not None and same is not None and str(same.version) == str(champion.version):
            # This very model took the champion alias (as `make run` does on a pull request when it wins):
            # the comparison a reviewer needs is with the champion it replaced.
            earlier = [v for v in champion_history(client, name) if v != str(champion.version)]
            previous = get_version(client, name, earlier[-1]) if earlier else None
        else:
            previous = None
    except ChurnError as exc:
        return [*lines, f"- No registry to compare with: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a report section, not a failure of the report
        return [*lines, f"- The registry could not be read: {first_line(exc)}"]
    if same is not None:
        aliases = ", ".join(aliases_by_version(client, name).get(str(same.version), [])) or "no alias"
        lines.append(f"- This workspace's model is registered as {name} version {same.version} ({aliases}).")
    elif decision is not None:
        lines.append(f"- This workspace's model is not a version of {name} in this registry.")
    if champion is None:
        return [*lines, f"- {name} has no champion yet."]
    if same is not None and str(same.version) == str(champion.version) and previous is None:
        return [*lines, f"- It is the first champion of {name}: nothing to compare with."]
    against, title = (previous, "previous champion") if previous is not None else (champion, "champion")
    theirs = version_metrics(against)
    header = f"| metric | {title} (version {against.version}) | this workspace | change |"
    table = [header, "|---|---:|---:|---:|"]
    for metric in sorted(set(workspace) | set(theirs)):
        ours, best = workspace.get(metric), theirs.get(metric)
        change = f"{ours - best:+.4f}" if ours is not None and best is not None else "-"
        table.append(f"| {metric} | {_number(best)} | {_number(ours)} | {change} |")
    return [*lines, "", *table]


# --- plots --------------------------------------------------------------------------------------------


def committed_points(rev: str, path: Path, key: str) -> list[dict] | None:
    """A plot file as committed at `rev` (plot data is uncached, so it is in git), or None."""
    shown = git("show", f"{rev}:{path}", check=False)
    return json.loads(shown).get(key) if shown else None


def overlay(series: list[tuple[str, list[dict]]], x: str, y: str, title: str, diagonal: bool, out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    for (label, points), colour in zip(series, ("#999999", "#3b75af"), strict=False):
        ax.plot([p[x] for p in points], [p[y] for p in points], color=colour, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=x, ylabel=y, title=title)
    ax.legend(loc="lower right" if diagonal else "lower left")
    fig.tight_layout()
    with atomic_path(out) as staged:
        fig.savefig(staged, format="png")


def plots_section(base: str, output: Path) -> list[str]:
    folder = output.with_suffix("")  # reports/review.md -> reports/review/
    folder.mkdir(parents=True, exist_ok=True)

    def link(path: Path) -> str:
        return Path(os.path.relpath(path, output.parent)).as_posix()

    lines: list[str] = []
    for title, path, key, x, y, diagonal in CURVES:
        series = [(f"{base} (base)", committed_points(base, path, key))]
        if path.exists():
            series.append(("workspace", json.loads(path.read_text()).get(key)))
        series = [(label, points) for label, points in series if points]
        if not series:
            lines.append(f"- {title}: no plot data ({path}) in either revision.")
            continue
        image = folder / f"{key}.png"
        overlay(series, x, y, f"{title} (test)", diagonal, image)
        lines.append(f"![{title}: {', '.join(label for label, _ in series)}]({link(image)})")
    for title, path in FIGURES:
        lines.append(f"![{title}]({link(path)})" if path.exists() else f"- {title}: {path} not in the workspace.")
    page = folder / "plots"
    try:
        dvc("plots", "diff", base, "--out", str(page))
        lines.append(f"\nEvery plot DVC knows, base against workspace: [dvc plots diff]({link(page / 'index.html')}).")
    except ChurnError as exc:
        lines.append(f"\n- `dvc plots diff` failed: {exc}")
    return lines


# --- the report ---------------------------------------------------------------------------------------


def card_section(output: Path) -> list[str]:
    """A link to the register stage's model card (intended use, intervals, calibration, slices, limits)."""
    if not paths.MODEL_CARD.exists():
        return [f"No model card: {paths.MODEL_CARD} is written by the register stage (bin/dvc repro).", ""]
    link = Path(os.path.relpath(paths.MODEL_CARD, output.parent)).as_posix()
    return [f"The model card of this workspace's model: [{paths.MODEL_CARD.name}]({link}).", ""]


def report(params, base: str, output: Path) -> Path:
    """Write the review report of this workspace against `base`; returns its path."""
    rev, commit = resolve_base(base)
    head = git("rev-parse", "HEAD", check=False) or "(no commit)"
    branch = git("branch", "--show-current", check=False) or "detached HEAD"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", check=False))
    metrics = json.loads(paths.METRICS.read_text()) if paths.METRICS.exists() else {}
    decision = json.loads(paths.DECISION.read_text()) if paths.DECISION.exists() else None

    params_table = dvc_table("params", "diff", rev)
    test_table = dvc_table("metrics", "diff", rev, "--targets", str(paths.METRICS))
    cv_table = dvc_table("metrics", "diff", rev, "--targets", str(paths.CV_METRICS))
    body = [
        f"# Review: {branch} against {rev}",
        "",
        f"Base {rev} at `{commit[:8]}`; workspace at `{head[:8]}` on {branch}"
        f"{', with uncommitted changes' if dirty else ''}. Made by `make report`.",
        "",
        "## Params that differ",
        "",
        params_table or f"No params differ from {rev}.",
        "",
        "## Metrics that differ",
        "",
        f"Test, on the held-out split ({paths.METRICS}):",
        "",
        test_table or f"No test metric differs from {rev}.",
        "",
        f"Cross-validation, on the train split ({paths.CV_METRICS}):",
        "",
        cv_table or f"No cross-validation metric differs from {rev}.",
        "",
        "## This workspace's model against the champion",
        "",
        *champion_section(params, metrics, decision),
        "",
        *card_section(output),
        "## Plots",
        "",
        *plots_section(rev, output),
        "",
    ]
    with atomic_path(output) as staged:
        staged.write_text("\n".join(body))
    log.info("wrote %s (base %s at %s)", output, rev, commit[:8])
    return output


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.config import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tools.review", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare with (main)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    run_cli(lambda: report(load_params(), args.base, args.output))


if __name__ == "__main__":
    main()
