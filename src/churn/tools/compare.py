"""Compare DVC experiments with their MLflow runs: a ranked table and reports/compare.html.

    python -m churn.tools.compare [--all-commits] [--output reports/compare.html]

Rows come from `dvc exp show --json`; each is matched to its MLflow parent run (tags `dvc.exp_name` +
`dvc.baseline_rev`) or, when DVC restored the results from its run-cache and no stage ran, to the run that
computed them (tag `dvc.out.reports/metrics.json` = the md5 in the experiment's lock). The two sources must
agree on the test metrics. Matching parents gain the tag `dvc.exp_rev` (the experiment's commit), which
exists only after the run, so a run in the MLflow UI is one `dvc exp apply <rev>` away from its workspace.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from pathlib import Path

from churn.config import LOWER_IS_BETTER, Params
from churn.errors import ChurnError
from churn.system import git
from churn.tools.experiments import METRICS_FILE, ExpRow, load_rows
from churn.tools.settings import CompareSettings

log = logging.getLogger(__name__)
SHOWN = ("roc_auc", "pr_auc", "f1", "log_loss")
OUT_TAG = f"dvc.out.{METRICS_FILE}"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


# --- MLflow side ------------------------------------------------------------------------------


def link_runs(rows: list[ExpRow], store) -> dict:
    """Attach to each row the MLflow parent run behind it, and check that the metrics agree; returns the
    parent runs by id (as read: one search for the whole experiment)."""
    runs = store.client.search_runs([store.experiment_id], max_results=50000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("churn.role") == "pipeline"}
    by_exp = {
        (r.data.tags.get("dvc.exp_name"), r.data.tags.get("dvc.baseline_rev")): r
        for r in sorted(parents.values(), key=lambda r: r.info.start_time)
    }
    producers: dict[str, list] = {}
    for r in runs:
        if OUT_TAG in r.data.tags:
            producers.setdefault(r.data.tags[OUT_TAG], []).append(r)

    for row in rows:
        own = None if row.is_baseline else by_exp.get((row.name, row.baseline))
        made = sorted(producers.get(row.outs.get(METRICS_FILE) or "", []), key=lambda r: r.info.start_time)
        producer_parent = parents.get(made[0].data.tags.get("mlflow.parentRunId")) if made else None
        if own is not None and own.data.metrics.get("test_roc_auc") is not None:
            row.mlflow_run = own.info.run_id
            _check_agreement(row, own.data.metrics)
        elif producer_parent is not None:
            # A baseline's results, or an experiment for which no stage ran (up to date, or restored
            # from DVC's run-cache): the run that computed them is found by the md5 of the metrics file.
            row.mlflow_run = producer_parent.info.run_id
            row.computed_by = None if row.is_baseline else producer_parent.info.run_id
            _check_agreement(row, producer_parent.data.metrics)
        else:
            row.notes.append("no MLflow run")
    return parents


def _check_agreement(row: ExpRow, mlflow_metrics: dict[str, float]) -> None:
    for name, value in row.metrics.items():
        logged = mlflow_metrics.get(f"test_{name}")
        if logged is not None and abs(float(logged) - float(value)) > 1e-6:
            row.notes.append(f"MISMATCH test_{name}: dvc {value} mlflow {logged}")


def sync_exp_revs(rows: list[ExpRow], store, parents: dict) -> int:
    """Tag each experiment's own parent run (`parents`: as link_runs read them) with its commit
    (`dvc.exp_rev`), where it differs; returns how many changed (one request each, none to read)."""
    changed = 0
    for row in rows:
        if row.is_baseline or not row.mlflow_run or row.computed_by:
            continue
        run = parents[row.mlflow_run]
        if run.data.tags.get("dvc.exp_rev") != row.rev:
            store.client.set_tag(row.mlflow_run, "dvc.exp_rev", row.rev)
            changed += 1
    return changed


# --- the table ----------------------------------------------------------------------------------


def differing_params(rows: list[ExpRow]) -> list[str]:
    """Params keys whose values differ between rows (tracking settings left out)."""
    keys = sorted({k for r in rows for k in r.params})
    return [
        k
        for k in keys
        if not k.startswith(("mlflow.", "sweep.", "compare.", "tune."))
        and len({json.dumps(r.params.get(k), sort_keys=True) for r in rows}) > 1
    ]


def rank(rows: list[ExpRow], metric: str) -> list[ExpRow]:
    sign = 1 if metric in LOWER_IS_BETTER else -1
    scored = [r for r in rows if metric in r.metrics]
    unscored = [r for r in rows if metric not in r.metrics]
    return sorted(scored, key=lambda r: sign * float(r.metrics[metric])) + unscored


def table(rows: list[ExpRow], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["experiment", "params", *[f"test {m}" for m in SHOWN], "cv roc_auc", "mlflow run"]
    body = []
    for r in rows:
        changed = ", ".join(f"{k.removeprefix('model.')}={r.params.get(k)}" for k in keys) or "-"
        run = (r.mlflow_run or "-")[:12] + (" (restored)" if r.computed_by else "")
        name = r.name + (" (baseline)" if r.is_baseline else "")
        values = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in SHOWN]
        cv = f"{r.cv['roc_auc']:.4f}" if "roc_auc" in r.cv else "-"
        body.append([name, changed, *values, cv, run + ("  " + "; ".join(r.notes) if r.notes else "")])
    return header, body


def render_text(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


# --- curves and HTML ------------------------------------------------------------------------------


def curve(rev: str, path: str, key: str) -> list[dict] | None:
    """A plot file as committed in an experiment's (or baseline's) commit: cache: false outputs are in git."""
    shown = git("show", f"{rev}:{path}", check=False)
    return None if shown is None else json.loads(shown).get(key)


def svg_chart(
    series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str, ylabel: str, diagonal: bool
) -> str:
    size, pad = 360, 40
    inner = size - 2 * pad

    def point(x: float, y: float) -> str:
        return f"{pad + x * inner:.1f},{pad + (1 - y) * inner:.1f}"

    parts = [
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{size + 160}" height="{size}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#999"/>',
        f'<text x="{pad}" y="{pad - 12}" font-size="14">{html.escape(title)}</text>',
        f'<text x="{pad + inner / 2}" y="{size - 8}" font-size="12" text-anchor="middle">{xlabel}</text>',
        f'<text x="12" y="{pad + inner / 2}" font-size="12" transform="rotate(-90 12 {pad + inner / 2})" '
        f'text-anchor="middle">{ylabel}</text>',
    ]
    if diagonal:
        parts.append(
            f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#ccc" stroke-dasharray="4"/>'
        )
    for index, (name, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(point(x, y) for x, y in points)
        parts.append(
            f'<polyline class="series" data-name="{html.escape(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{coords}"/>'
        )
        y = pad + 14 + 16 * index
        parts.append(f'<text x="{size - pad + 50}" y="{y}" font-size="11" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(header: list[str], body: list[list[str]], rows: list[ExpRow], curves: int, metric: str) -> str:
    roc, prc = [], []
    for r in rows[:curves]:
        points = curve(r.rev, "reports/plots/roc.json", "roc")
        if points:
            roc.append((r.name, [(p["fpr"], p["tpr"]) for p in points]))
        points = curve(r.rev, "reports/plots/prc.json", "prc")
        if points:
            prc.append((r.name, [(p["recall"], p["precision"]) for p in points]))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>" for cells in body)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Experiments</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; font-size: 13px; }}
th {{ background: #f0f0f0; }} .charts {{ display: flex; flex-wrap: wrap; gap: 2em; margin-top: 2em; }}
</style></head><body>
<h1>Experiments, ranked by test {html.escape(metric)}</h1>
<table id="experiments"><thead><tr>{head}</tr></thead><tbody>
{trs}
</tbody></table>
<div class="charts">
{svg_chart(roc, "ROC (test)", "false positive rate", "true positive rate", diagonal=True)}
{svg_chart(prc, "Precision-recall (test)", "recall", "precision", diagonal=False)}
</div></body></html>
"""


def compare(params: Params, settings: CompareSettings, all_commits: bool, output: Path) -> list[ExpRow]:
    from churn.tracking.store import connect

    metric = settings.sort_by
    rows = load_rows(all_commits)
    if not rows:
        raise ChurnError("dvc exp show lists no commit with results; run `make run` and commit first")
    store = connect(params.mlflow.experiment, params.mlflow.tracking_uri)
    parents = link_runs(rows, store)
    synced = sync_exp_revs(rows, store, parents)
    ranked = rank(rows, metric)
    keys = differing_params(ranked)
    header, body = table(ranked, keys)
    log.info("experiments ranked by test %s:\n%s", metric, render_text(header, body))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(render_html(header, body, ranked, settings.curves, metric))
    tmp.replace(output)
    log.info("wrote %s; tagged %d MLflow runs with dvc.exp_rev", output, synced)
    mismatched = [r.name for r in rows if any(n.startswith("MISMATCH") for n in r.notes)]
    if mismatched:
        raise ChurnError(f"DVC and MLflow disagree on the metrics of {', '.join(mismatched)}")
    return ranked


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.tools.settings import compare_settings, load

    parser = argparse.ArgumentParser(prog="python -m churn.tools.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--all-commits", action="store_true", help="include experiments of every commit")
    parser.add_argument("--output", type=Path, default=Path("reports/compare.html"))
    args = parser.parse_args(argv)

    def _main() -> None:
        params, raw = load()
        compare(params, compare_settings(raw), args.all_commits, args.output)

    run_cli(_main)


if __name__ == "__main__":
    main()
