"""A suite's report: ``results.md`` and ``results.csv`` (the table), ``report.md`` (tables, plots, failures) and
``plots/*.png``, all under the suite's output folder and written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from debiaslab.bench.aggregate import add_differences, read_run, summarise, table_notes
from debiaslab.bench.paper import headline_metric
from debiaslab.bench.results import (
    REPORTED_MARK,
    order_rows,
    ratio_pivot_markdown,
    results_csv,
    results_markdown,
    rule_pivot_markdown,
)
from debiaslab.bench.states import STATUSES, BenchResult, RunState
from debiaslab.bench.stats import Stats
from debiaslab.errors import DebiasLabError
from debiaslab.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def write_report(result: BenchResult) -> tuple[dict[str, Path], dict[str, str]]:
    """Write the tables, plots and ``report.md`` of ``result``; returns the files and the Markdown tables."""
    out = result.out
    done = [s for s in result.states if s.status in ("finished", "skipped")]
    records = []
    for s in done:
        try:
            records.append(read_run(s.run.run_dir, label=s.run.label))
        except (DebiasLabError, KeyError) as exc:
            s.status, s.detail = "failed", f"its final.json cannot be read: {exc}"
    done = [s for s in done if s.status in ("finished", "skipped")]
    stats = Stats()
    rows = order_rows(summarise(records, stats=stats), [m.label for m in result.suite.methods])
    if any("erm" in (r["method"], r["method_name"]) for r in rows):
        add_differences(rows, "erm", stats, ("unbiased", "worst_group", "conflicting"))
    compare = result.suite.paper_budget
    table = results_markdown(rows, compare_paper=compare)
    files = {
        "results.md": atomic_write_text(out / "results.md", table + "\n"),
        "results.csv": atomic_write_text(out / "results.csv", results_csv(rows, compare_paper=compare)),
    }
    plots, plot_note = _plots(rows, done, out, compare)
    files.update(plots)
    pivots = ratio_pivots(rows, compare_paper=compare)
    text = report_markdown(result, rows, table, plots, plot_note, done, pivots)
    files["report.md"] = atomic_write_text(out / "report.md", text)
    return files, {"results": table, **pivots}


def ratio_pivots(rows: Sequence[dict[str, Any]], compare_paper: bool = True) -> dict[str, str]:
    """Methods x conflicting ratios, one table per dataset (and fixed options) with more than one ratio, for the
    dataset's headline metric and for worst-group accuracy; keyed ``"<dataset><options>: test <metric>"``; the
    published numbers beside ours when ``compare_paper``."""
    pivots: dict[str, str] = {}
    for (dataset, opts), group in _groups(rows).items():
        if len({r["options"].get("ratio") for r in group if r["deployed"]}) > 1:
            options = "" if opts == "{}" else f" {opts}"
            for metric in dict.fromkeys((headline_metric(dataset), "worst_group")):
                pivots[f"{dataset}{options}: test {metric}"] = ratio_pivot_markdown(
                    group, dataset, metric, compare_paper=compare_paper
                )
    return pivots


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows by (dataset, options other than the ratio)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        opts = json.dumps({k: v for k, v in r["options"].items() if k != "ratio"}, sort_keys=True)
        groups.setdefault((r["dataset"], opts), []).append(r)
    return groups


def _plots(
    rows: list[dict[str, Any]], done: list[RunState], out: Path, compare_paper: bool
) -> tuple[dict[str, Path], str]:
    from debiaslab.bench import plots

    if not plots.matplotlib_available():
        log.warning("%s; the report has no figures", plots.PLOTS_MISSING)
        return {}, plots.PLOTS_MISSING
    files: dict[str, Path] = {}
    folder = out / "plots"
    for (dataset, opts), group in _groups(rows).items():
        deployed = [r for r in group if r["deployed"] and "ratio" in r["options"]]
        if not deployed:
            continue
        options = json.loads(opts)
        rules = ", ".join(sorted({r["selection"] for r in deployed}))
        seeds = sorted({len(r["seeds"]) for r in deployed})
        subtitle = f"{', '.join(f'{k}={v}' for k, v in options.items()) + '; ' if options else ''}"
        subtitle += f"selected by {rules}; {'/'.join(map(str, seeds))} seed(s) per point"
        name = f"{dataset}{''.join(f'-{k}{v}' for k, v in options.items())}-{headline_metric(dataset)}-vs-ratio.png"
        files[f"plots/{name}"] = plots.plot_metric_vs_ratio(
            deployed, dataset, folder / name, subtitle=subtitle, compare_paper=compare_paper
        )
    for label in dict.fromkeys(s.run.label for s in done):
        mine = [s for s in done if s.run.label == label]
        run = min(mine, key=lambda s: (s.run.dataset_dir, s.run.ratio or 0.0, s.run.config.seed)).run
        stem = f"{label}-{run.dataset_dir}{'' if run.ratio is None else f'-r{run.ratio}'}-seed{run.config.seed}"
        try:
            files[f"plots/groups-{stem}.png"] = plots.plot_group_heatmap(
                run.run_dir, folder / f"groups-{stem}.png", label
            )
            if (run.run_dir / "metrics.jsonl").is_file():
                files[f"plots/curves-{stem}.png"] = plots.plot_training_curves(
                    run.run_dir, folder / f"curves-{stem}.png", label
                )
        except (OSError, KeyError, ValueError) as exc:  # an old or partial run directory: no figure, say why
            log.warning("no figures for %s: %s", run.run_dir, exc)
    return files, ""


def report_markdown(
    result: BenchResult,
    rows: list[dict[str, Any]],
    table: str,
    plots: dict[str, Path],
    plot_note: str,
    done: list[RunState],
    pivots: dict[str, str],
) -> str:
    suite = result.suite
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    counts = ", ".join(f"{result.count(k)} {k}" for k in STATUSES if result.count(k))
    lines = [f"# Benchmark `{suite.name}`", ""]
    if suite.description:
        lines += [suite.description, ""]
    lines += [
        f"- suite: {suite.source}",
        f"- runs: {len(result.states)} planned — {counts or 'none'} (skipped = finished earlier, same run identity)",
        f"- seeds: {', '.join(map(str, suite.seeds))}; threads per run: {suite.threads}; report written {now}",
    ]
    if result.wall_s is not None:
        lines.append(f"- wall time of this invocation: {result.wall_s:.0f} s")
    machine = _machine(done)
    if machine:
        lines.append(f"- machine: {machine}")
    if suite.paper_budget:
        paper_note = (
            "Paper numbers: the published results recorded in `debiaslab.bench.paper`, each with its source; the "
            "Colored MNIST ones were selected on the reported (test) split, ours on validation unless the protocol "
            "is `paper`."
        )
    else:
        paper_note = (
            "This suite trains at a shortened budget (`paper_budget: false`), so the published full-budget "
            "numbers are not shown beside these."
        )
    lines += [
        "",
        "## Results (test split, %: 95 % intervals over seeds and test examples)",
        "",
        table if rows else "No finished runs yet.",
        "",
        table_notes(rows),
        "",
        f"`rule` is the selection rule; {REPORTED_MARK} marks a rule reported from the same training as another "
        f"(the run deployed a different rule). {paper_note} "
        "Time is training wall time per run; memory is the run's peak resident memory (CPU) or peak CUDA memory.",
        "",
    ]
    for title, pivot in pivots.items():
        lines += [f"### {title} by conflicting ratio", "", pivot, ""]
    if any(not r["deployed"] for r in rows):
        lines += ["## Selection rules side by side (one training per method, ratio and seed)", ""]
        for dataset in dict.fromkeys(r["dataset"] for r in rows):
            for metric in dict.fromkeys((headline_metric(dataset), "worst_group")):
                subset = [r for r in rows if r["dataset"] == dataset]
                lines += [f"### {dataset}: test {metric}", "", rule_pivot_markdown(subset, metric), ""]
    lines += ["## Figures", ""]
    if plot_note:
        lines += [f"No figures: {plot_note}.", ""]
    for name in plots:
        lines += [f"![{Path(name).stem}]({name})", ""]
    problems = [s for s in result.states if s.status not in ("finished", "skipped")]
    if problems:
        lines += ["## Runs without results", ""]
        for s in problems:
            rel = os.path.relpath(s.run.run_dir, result.out)
            err = s.run.run_dir / "error.txt"
            link = f" ([error.txt]({rel}/error.txt))" if err.is_file() else ""
            detail = s.detail or ("not run yet" if s.status in ("todo", "resume") else "")
            lines.append(f"- **{s.status}** `{s.run.describe()}` ({rel}): {detail}{link}")
        lines.append("")
    lines += ["## Files", "", "`results.md`, `results.csv` (the table), `summary.json` (every run's status).", ""]
    return "\n".join(lines)


def _machine(done: list[RunState]) -> str:
    for s in done:
        try:
            return json.loads((s.run.run_dir / "final.json").read_text()).get("machine", "")
        except (OSError, ValueError):
            continue
    return ""
