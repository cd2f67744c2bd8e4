"""Collect finished run directories and summarise them: mean ± std over seeds per (method, dataset, options)."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaslab.errors import DataError

DEFAULT_COLUMNS = ("unbiased", "conflicting", "aligned", "worst_group", "accuracy")


@dataclass
class RunRecord:
    """The parts of a run's ``final.json`` that tables need."""

    path: Path
    method: str
    dataset: str
    options: dict[str, Any]
    hparams: dict[str, Any]
    seed: int
    protocol: str
    selection: str
    metrics: dict[str, dict[str, float]]
    train_time_s: float
    peak_memory_mb: float


@dataclass
class Cell:
    """Mean and standard deviation (over seeds) of one metric."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        vals = [v for v in self.values if v is not None and not math.isnan(v)]
        return statistics.fmean(vals) if vals else math.nan

    @property
    def std(self) -> float:
        vals = [v for v in self.values if v is not None and not math.isnan(v)]
        return statistics.stdev(vals) if len(vals) > 1 else 0.0

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if math.isnan(self.mean):
            return "n/a"
        if len(self.values) > 1:
            return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"
        return f"{scale * self.mean:.{digits}f}"


def find_runs(roots: Iterable[str | Path]) -> list[RunRecord]:
    """Every ``final.json`` below ``roots`` (unfinished runs are skipped)."""
    records = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DataError(f"run root {root} does not exist")
        for final in sorted(root.rglob("final.json")):
            try:
                d = json.loads(final.read_text())
            except json.JSONDecodeError as exc:
                raise DataError(f"{final} is not valid JSON ({exc.msg}); expected a finished run's summary") from exc
            records.append(
                RunRecord(
                    path=final.parent,
                    method=d["method"],
                    dataset=d["dataset"],
                    options=d.get("dataset_options", {}),
                    hparams=d["hparams"] if "hparams" in d else _hparams_from_config(final.parent),
                    seed=d["seed"],
                    protocol=d.get("protocol", "default"),
                    selection=d.get("selection", ""),
                    metrics=d["metrics"],
                    train_time_s=d.get("train_time_s", math.nan),
                    peak_memory_mb=d.get("peak_memory_mb", math.nan),
                )
            )
    return records


def _hparams_from_config(run_dir: Path) -> dict[str, Any]:
    """The user-set hyperparameters of a run (from ``config.yaml``; older ``final.json`` files lack them)."""
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        return {}
    return (yaml.safe_load(config.read_text()) or {}).get("run", {}).get("hparams", {}) or {}


#: Hyperparameters that are not settings of the method: execution details, and per-seed inputs (DFR's base run
#: differs with the seed by design). They never split a row.
NOT_SETTINGS = frozenset({"n_jobs", "base_run"})


def method_label(method: str, hparams: dict[str, Any]) -> str:
    """``jtt`` or ``jtt (lambda_up=200)``: runs with different hyperparameters are never pooled as seeds."""
    hparams = {k: v for k, v in hparams.items() if k not in NOT_SETTINGS}
    if not hparams:
        return method
    return f"{method} (" + ", ".join(f"{k}={v}" for k, v in sorted(hparams.items())) + ")"


def summarise(
    records: Sequence[RunRecord], split: str = "test", columns: Sequence[str] = DEFAULT_COLUMNS
) -> list[dict[str, Any]]:
    """One row per (method, dataset, options, protocol, selection) with a :class:`Cell` per column."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        key = (
            method_label(r.method, r.hparams),
            r.dataset,
            json.dumps(r.options, sort_keys=True),
            r.protocol,
            r.selection,
        )
        groups[key].append(r)
    rows = []
    for (method, dataset, options, protocol, selection), runs in sorted(groups.items()):
        row: dict[str, Any] = {
            "method": method,
            "dataset": dataset,
            "options": json.loads(options),
            "protocol": protocol,
            "selection": selection,
            "seeds": sorted(r.seed for r in runs),
        }
        for col in columns:
            row[col] = Cell([r.metrics.get(split, {}).get(col, math.nan) for r in runs])
        row["train_time_s"] = Cell([r.train_time_s for r in runs])
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    header = ["method", "dataset options", "protocol", "selection", "seeds", *[f"{c} %" for c in columns], "time s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(row["options"].items()) if k != "protocol")
        cells = [
            row["method"],
            opts,
            row["protocol"],
            row["selection"],
            ",".join(map(str, row["seeds"])),
            *[row[c].format() for c in columns],
            row["train_time_s"].format(scale=1.0, digits=0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot_markdown(
    rows: Sequence[dict[str, Any]],
    metric: str = "unbiased",
    option: str = "ratio",
    reference: Any = None,
) -> str:
    """Methods as rows, values of ``option`` (e.g. the conflicting ratio) as columns: ``metric`` mean ± std.

    ``reference(method, value) -> float | None`` adds the published number and our difference to each cell.
    """
    values = sorted({r["options"].get(option) for r in rows if option in r["options"]})
    keys = sorted({(r["method"], r["protocol"], r["selection"]) for r in rows})
    header = ["method", "protocol", "selection", *[f"{option} {v}" for v in values]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, protocol, selection in keys:
        cells = [method, protocol, selection]
        for v in values:
            match = [
                r
                for r in rows
                if (r["method"], r["protocol"], r["selection"]) == (method, protocol, selection)
                and r["options"].get(option) == v
            ]
            if not match:
                cells.append("")
                continue
            cell: Cell = match[0][metric]
            text = f"{cell.format()} (n={len(match[0]['seeds'])})"
            ref = reference(method, v) if reference is not None else None
            if ref is not None and not math.isnan(cell.mean):
                text += f" [paper {ref:.1f}, {100 * cell.mean - ref:+.1f}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
