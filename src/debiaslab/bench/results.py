"""A suite's results table (Markdown and CSV): 95 % intervals over seeds and test examples (mean ± std where the
runs give none), each rule a row with the labels it read, the papers' numbers beside.

Rows come from :func:`debiaslab.bench.aggregate.summarise`; values are percentages. A row of a rule that a run
reported from the same training, not the rule it deployed, is marked with ``*``. ``compare_paper=False`` (a suite
trained at a shortened budget) leaves the published numbers out: a smoke-budget number beside a full-budget one
is no comparison.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from debiaslab.bench.aggregate import Cell, metric_cell
from debiaslab.bench.health_marks import HealthNotes
from debiaslab.bench.paper import Reference, headline_metric, references
from debiaslab.bench.stats import mark

COLUMNS = ("unbiased", "conflicting", "aligned", "worst_group", "accuracy")
TITLES = {
    "unbiased": "unbiased",
    "conflicting": "conflicting",
    "aligned": "aligned",
    "worst_group": "worst-group",
    "accuracy": "average",
}
REPORTED_MARK = "*"


def order_rows(rows: list[dict[str, Any]], labels: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Sort by dataset, options, the suite's method order (then name), deployed rule first, rule name."""
    rank = {label: i for i, label in enumerate(labels)}

    def key(row: dict[str, Any]) -> tuple:
        opts = {k: v for k, v in row["options"].items() if k != "ratio"}
        return (
            row["dataset"],
            json.dumps(opts, sort_keys=True),
            row["options"].get("ratio", 0.0),
            rank.get(row["method"], len(rank)),
            row["method"],
            not row["deployed"],
            row["selection"],
        )

    return sorted(rows, key=key)


def row_references(row: dict[str, Any]) -> list[Reference]:
    return references(row["method_name"], row["dataset"], row["options"])


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()) if k != "ratio")


def _rule_text(row: dict[str, Any]) -> str:
    return row["selection"] + ("" if row["deployed"] else REPORTED_MARK)


def _diff(cell: Cell, ref: Reference) -> float:
    return 100 * cell.mean - ref.value if not math.isnan(cell.mean) else math.nan


def results_markdown(rows: Sequence[dict[str, Any]], compare_paper: bool = True) -> str:
    """The results table: one line per (method, dataset, options, ratio, rule); the published numbers and ours
    minus them as two columns when ``compare_paper``."""
    paper_columns = ["paper %", "ours − paper"] if compare_paper else []
    header = [
        "method",
        "dataset",
        "ratio",
        "rule",
        "labels",
        "seeds",
        *[f"{TITLES[c]} %" for c in COLUMNS],
        *paper_columns,
        "train s",
        "peak MB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        refs = row_references(row)
        paper = " / ".join(f"{TITLES.get(r.metric, r.metric)} {r.value:.1f}" for r in refs)
        diffs = " / ".join(_signed(_diff(row[r.metric], r)) if r.metric in row else "n/a" for r in refs)
        dataset = row["dataset"] + (f" ({_options_text(row['options'])})" if _options_text(row["options"]) else "")
        ratio = row["options"].get("ratio")
        cells = [
            row["method"],
            dataset,
            "" if ratio is None else f"{ratio:g}",
            _rule_text(row),
            row.get("labels", ""),
            str(len(row["seeds"])),
            *[metric_cell(row, c) for c in COLUMNS],
            *([paper, diffs] if compare_paper else []),
            row["train_time_s"].format(scale=1.0, digits=0),
            row["peak_memory_mb"].format(scale=1.0, digits=0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}"


def results_csv(rows: Sequence[dict[str, Any]], compare_paper: bool = True) -> str:
    """The same rows as CSV, mean and std in separate columns (percent), one paper/diff column pair per metric
    (left empty unless ``compare_paper``)."""
    fields = ["method", "method_name", "dataset", "options", "ratio", "protocol", "rule", "labels", "deployed"]
    fields += ["n_seeds", "seeds"] + [f"{c}_{s}" for c in COLUMNS for s in ("mean", "std", "ci_low", "ci_high")]
    fields += [f"paper_{c}" for c in COLUMNS] + [f"diff_{c}" for c in COLUMNS]
    fields += ["train_time_s_mean", "peak_memory_mb_mean", "paper_source"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        refs = {r.metric: r for r in row_references(row)} if compare_paper else {}
        line: dict[str, Any] = {
            "method": row["method"],
            "method_name": row["method_name"],
            "dataset": row["dataset"],
            "options": json.dumps({k: v for k, v in row["options"].items() if k != "ratio"}, sort_keys=True),
            "ratio": row["options"].get("ratio", ""),
            "protocol": row["protocol"],
            "rule": row["selection"],
            "labels": row.get("labels", ""),
            "deployed": row["deployed"],
            "n_seeds": len(row["seeds"]),
            "seeds": " ".join(map(str, row["seeds"])),
            "train_time_s_mean": _val(row["train_time_s"].mean),
            "peak_memory_mb_mean": _val(row["peak_memory_mb"].mean),
            "paper_source": "; ".join(sorted({r.source for r in refs.values()})),
        }
        for c in COLUMNS:
            cell: Cell = row[c]
            line[f"{c}_mean"] = _pct(cell.mean)
            line[f"{c}_std"] = _pct(cell.std) if len(cell.values) > 1 else ""
            iv = row.get("intervals", {}).get(c)
            line[f"{c}_ci_low"] = _pct(iv.low) if iv is not None else ""
            line[f"{c}_ci_high"] = _pct(iv.high) if iv is not None else ""
            ref = refs.get(c)
            line[f"paper_{c}"] = "" if ref is None else ref.value
            line[f"diff_{c}"] = "" if ref is None else _val(_diff(cell, ref), 2)
        writer.writerow(line)
    return buf.getvalue()


def _pct(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.2f}"


def _val(value: float, digits: int = 1) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def ratio_pivot_markdown(
    rows: Sequence[dict[str, Any]],
    dataset: str,
    metric: str | None = None,
    compare_paper: bool = True,
    style: str = "bracket",
    notes_at: str | None = None,
) -> str:
    """Methods x ratios of the headline metric (deployed rules): ours (its 95 % interval as ``[low, high]`` or, with
    ``style="pm"``, ``± half-width``; mean ± std where the runs give none), n, the mark against the reference row
    after :func:`~debiaslab.bench.aggregate.add_differences`, and [paper, ours − paper] when ``compare_paper``.
    Premise checks that did not pass are footnoted under the table, or with ``notes_at`` (a link) one line says
    where they are listed."""
    metric = metric or headline_metric(dataset)
    notes = HealthNotes()
    rows = [r for r in rows if r["dataset"] == dataset and r["deployed"] and "ratio" in r["options"]]
    ratios = sorted({r["options"]["ratio"] for r in rows})
    keys = list(dict.fromkeys((r["method"], r["selection"]) for r in rows))
    header = ["method", "rule", "labels", *[f"{100 * v:g} %" for v in ratios]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, rule in keys:
        mine = [r for r in rows if (r["method"], r["selection"]) == (method, rule)]
        cells = [method, rule, " / ".join(dict.fromkeys(r.get("labels", "") for r in mine))]
        for v in ratios:
            match = [r for r in mine if r["options"]["ratio"] == v]
            if not match:
                cells.append("")
                continue
            row = match[0]
            text = f"{metric_cell(row, metric, style, show_n=False)} (n={len(row['seeds'])})"
            text += f" {mark((row.get('vs') or {}).get(metric))}".rstrip()
            refs = row_references(row) if compare_paper else []
            ref = next((x for x in refs if x.metric == metric), None)
            if ref is not None and not math.isnan(row[metric].mean):
                text += f" [paper {ref.value:.1f}, {_signed(_diff(row[metric], ref))}]"
            health = notes.mark(f"{row['method_name']}, ratio {v:g}", row.get("health", []))
            cells.append(f"{text} {health}" if health else text)
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.block()
    if footnotes and notes_at:
        footnotes = f"⚠ / ✗: a premise check warned or failed on some of the row's runs ([which, and why]({notes_at}))."
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")


def rule_pivot_markdown(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """Methods x selection rules of ``metric`` per (dataset, options, ratio): the rules side by side."""
    rules = list(dict.fromkeys(r["selection"] for r in rows))
    header = ["method", "dataset", "ratio", *[f"{rule}" for rule in rules]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = list(dict.fromkeys((r["method"], r["dataset"], json.dumps(r["options"], sort_keys=True)) for r in rows))
    for method, dataset, options in keys:
        opts = json.loads(options)
        ratio = opts.get("ratio")
        name = dataset + (f" ({_options_text(opts)})" if _options_text(opts) else "")
        cells = [method, name, "" if ratio is None else f"{ratio:g}"]
        for rule in rules:
            match = [
                r
                for r in rows
                if (r["method"], r["dataset"], json.dumps(r["options"], sort_keys=True)) == (method, dataset, options)
                and r["selection"] == rule
            ]
            cells.append(
                f"{metric_cell(match[0], metric)}{'' if match[0]['deployed'] else REPORTED_MARK}" if match else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
