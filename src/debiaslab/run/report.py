"""Markdown for a run's ``report.md``: what ran, how it was selected, and the per-group test table."""

from __future__ import annotations

import math
from typing import Any

from debiaslab.evaluation.metrics import EvalReport

SUMMARY_KEYS = (
    ("unbiased", "unbiased"),
    ("worst_group", "worst-group"),
    ("aligned", "aligned"),
    ("conflicting", "conflicting"),
    ("accuracy", "accuracy"),
    ("worst_class", "worst-class"),
    ("class_diff", "ClassDiff"),
)


def pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def metrics_table(metrics_by_split: dict[str, dict[str, float]]) -> str:
    splits = list(metrics_by_split)
    lines = ["| metric (%) | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key, label in SUMMARY_KEYS:
        lines.append(f"| {label} | " + " | ".join(pct(metrics_by_split[s].get(key)) for s in splits) + " |")
    return "\n".join(lines)


def group_table(report: EvalReport) -> str:
    """A class × attribute accuracy grid when there are many groups, else one row per group."""
    if report.n_attrs > 2 and report.n_classes > 2:
        grid = {(r.y, r.attr): r.accuracy for r in report.rows}
        aligned = {r.group for r in report.rows if r.aligned}
        header = "| class \\ attr | " + " | ".join(str(a) for a in range(report.n_attrs)) + " |"
        lines = [header, "|---|" + "---|" * report.n_attrs]
        for c in range(report.n_classes):
            cells = []
            for a in range(report.n_attrs):
                text = pct(grid.get((c, a)))
                cells.append(f"**{text}**" if (c * report.n_attrs + a) in aligned else text)
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\nBold cells are bias-aligned groups."
    lines = ["| group | class | attr | aligned | n | accuracy (%) | loss |", "|---|---|---|---|---|---|---|"]
    for r in report.rows:
        loss = "n/a" if math.isnan(r.loss) else f"{r.loss:.4f}"
        lines.append(
            f"| {r.group} | {r.y} | {r.attr} | {'yes' if r.aligned else 'no'} | {r.n} | {pct(r.accuracy)} | {loss} |"
        )
    return "\n".join(lines)


def health_lines(checks: list[dict[str, Any]]) -> list[str]:
    """The premise checks that did not pass, one line each (nothing when all pass or none were recorded)."""
    bad = [c for c in checks if c.get("status") != "ok"]
    if not bad:
        return [f"All {len(checks)} premise checks passed.", ""] if checks else []
    lines = ["## Premise checks that did not pass", ""]
    for c in bad:
        labels = " (uses attribute labels)" if c.get("uses_labels") else ""
        lines.append(f"- **{c['status']}** `{c['name']}`{labels}: {c.get('message', '')}")
    return [*lines, ""]


def run_report_markdown(final: dict[str, Any], test_report: EvalReport) -> str:
    selected = final["selected"]
    lines = [
        f"# {final['method']} on {final['dataset']} {final['dataset_options']} (seed {final['seed']})",
        "",
        f"- protocol: **{final['protocol']}**; checkpoints selected on the **{final['selection_split']}** split",
        f"- selection rule: `{final['selection']}` -> stage `{selected.get('stage')}` epoch {selected.get('epoch')}",
        f"- training time: {final['train_time_s']} s; peak memory {final['peak_memory_mb']} MB; {final['machine']}",
        f"- finished: {final['finished_at']}",
    ]
    lines += [f"- note: {note}" for note in final.get("notes", [])]
    lines += ["", "## Summary", "", metrics_table(final["metrics"]), ""]
    lines += health_lines(final.get("health") or [])
    lines += ["## Test accuracy per group", ""]
    lines += [group_table(test_report), ""]
    return "\n".join(lines)
