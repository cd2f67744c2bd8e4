"""Collect finished run directories and summarise them: mean ± std over seeds per (method, dataset, options, rule).

A run that reports several selection rules from one training (``final.json["selections"]``) contributes one
record per rule; the ``selection`` column names the rule, so the rules of a study sit side by side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaslab.bench.health_marks import HealthNotes, recorded_checks
from debiaslab.errors import DataError
from debiaslab.evaluation.health import Check

log = logging.getLogger(__name__)

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
    #: ``{rule: {"epoch", "score", "deployed", "val", "test"}}`` (runs written before this key: empty)
    selections: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the row name to use instead of :func:`method_label` (a suite's label)
    label: str | None = None
    #: False for the record of a report rule (not the rule the run deployed)
    deployed: bool = True
    total_time_s: float = math.nan
    #: processes the run trained on, and its global batch (None: not recorded): runs differing in them never pool
    world_size: int = 1
    global_batch_size: int | None = None
    #: the run's premise checks (``final.json["health"]``, or re-scored from the record); None: not checked
    health: list[Check] | None = None

    @property
    def row_label(self) -> str:
        label = self.label or method_label(self.method, self.hparams)
        if self.world_size > 1:
            label += f" [{self.world_size} processes, batch {self.global_batch_size}]"
        return label


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


def find_runs(roots: Iterable[str | Path], rescore: bool = False) -> list[RunRecord]:
    """Every ``final.json`` below ``roots`` (unfinished runs are skipped, and so are hidden folders such as the
    ``.previous-run`` a run being replaced with ``--overwrite`` is kept in). ``rescore``: runs that recorded no
    premise checks get those their record still supports (see :func:`read_run`)."""
    records = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise DataError(f"run root {root} does not exist")
        finals = [f for f in sorted(root.rglob("final.json")) if not _hidden(f.relative_to(root))]
        records.extend(read_run(final.parent, rescore=rescore) for final in finals)
    return records


def _hidden(path: Path) -> bool:
    return any(part.startswith(".") for part in path.parts[:-1])


def read_run(run_dir: str | Path, label: str | None = None, rescore: bool = False) -> RunRecord:
    """The :class:`RunRecord` of one finished run directory (``label`` names its row). ``rescore``: a run that
    recorded no premise checks gets those its method computes from the record (``Method.record_health``)."""
    final = Path(run_dir) / "final.json"
    try:
        d = json.loads(final.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{final} is not valid JSON ({exc.msg}); expected a finished run's summary") from exc
    except OSError as exc:
        raise DataError(f"cannot read {final} ({exc.strerror or exc}); expected a finished run's summary") from exc
    return RunRecord(
        path=final.parent,
        method=d["method"],
        dataset=d["dataset"],
        options=d.get("dataset_options", {}),
        hparams=d["hparams"] if "hparams" in d else _hparams_from_config(final.parent),
        seed=d["seed"],
        protocol=d.get("protocol", "default"),
        selection=d.get("selection", ""),
        metrics=d["metrics"],
        train_time_s=_number(d.get("train_time_s")),
        peak_memory_mb=_number(d.get("peak_memory_mb")),
        selections=d.get("selections") or {},
        label=label,
        total_time_s=_number(d.get("total_time_s")),
        health=recorded_checks(d, rescore=rescore),
        **_scale(d, final.parent),
    )


def _scale(final: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``world_size`` and ``global_batch_size`` from ``final.json``, else from ``config.yaml`` (older runs)."""
    if "world_size" in final:
        return {"world_size": int(final["world_size"]), "global_batch_size": final.get("global_batch_size")}
    import yaml

    config = run_dir / "config.yaml"
    doc = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    world = int(doc.get("world_size") or 1)
    batch = (doc.get("resolved_hparams") or {}).get("batch_size")
    # before the global batch, --batch-size was per process
    return {"world_size": world, "global_batch_size": batch * world if isinstance(batch, int) else None}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def per_rule(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Each record, then one record per further rule in its ``selections`` (that rule's val/test metrics)."""
    out = []
    for r in records:
        out.append(r)
        for rule, entry in r.selections.items():
            if rule == r.selection or entry.get("deployed"):
                continue
            metrics = {"val": entry.get("val") or {}, "test": entry.get("test") or {}}
            out.append(dataclasses.replace(r, selection=rule, metrics=metrics, deployed=False))
    return out


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
#: Hyperparameters a row shows elsewhere (the ``selection`` column) or that leave the deployed model unchanged.
SHOWN_ELSEWHERE = frozenset({"selection", "report_rules"})


def method_label(method: str, hparams: dict[str, Any]) -> str:
    """``jtt`` or ``jtt (lambda_up=200)``: runs with different hyperparameters are never pooled as seeds."""
    hparams = {k: v for k, v in hparams.items() if k not in NOT_SETTINGS | SHOWN_ELSEWHERE}
    if not hparams:
        return method
    return f"{method} (" + ", ".join(f"{k}={v}" for k, v in sorted(hparams.items())) + ")"


def summarise(
    records: Sequence[RunRecord],
    split: str = "test",
    columns: Sequence[str] = DEFAULT_COLUMNS,
    rules: bool = True,
) -> list[dict[str, Any]]:
    """One row per (method, dataset, options, protocol, selection) with a :class:`Cell` per column.

    ``rules``: also a row per further selection rule a run reports (see :func:`per_rule`). A seed counted twice
    in a row (the same rule deployed by one run and reported by another) is counted once, the deployed one kept.
    """
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in per_rule(records) if rules else records:
        key = (
            r.row_label,
            r.dataset,
            json.dumps(r.options, sort_keys=True),
            r.protocol,
            r.selection,
            r.world_size,
            r.global_batch_size or 0,
        )
        groups[key].append(r)
    rows = []
    for (method, dataset, options, protocol, selection, world, batch), runs in sorted(groups.items()):
        runs = _one_per_seed(runs)
        row: dict[str, Any] = {
            "method": method,
            "method_name": runs[0].method,
            "deployed": any(r.deployed for r in runs),
            "runs": [r.path for r in runs],
            "dataset": dataset,
            "options": json.loads(options),
            "protocol": protocol,
            "selection": selection,
            "seeds": sorted(r.seed for r in runs),
            "world_size": world,
            "global_batch_size": batch or None,
        }
        for col in columns:
            row[col] = Cell([r.metrics.get(split, {}).get(col, math.nan) for r in runs])
        row["health"] = [(r.seed, r.health) for r in runs]
        row["train_time_s"] = Cell([r.train_time_s for r in runs])
        row["peak_memory_mb"] = Cell([r.peak_memory_mb for r in runs])
        rows.append(row)
    return rows


def _one_per_seed(runs: list[RunRecord]) -> list[RunRecord]:
    by_seed: dict[int, RunRecord] = {}
    for r in sorted(runs, key=lambda r: (r.seed, not r.deployed)):
        if r.seed in by_seed:
            log.warning("seed %d of %s counted once: %s and %s", r.seed, r.row_label, by_seed[r.seed].path, r.path)
            continue
        by_seed[r.seed] = r
    return list(by_seed.values())


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """One line per row; a ``health`` column (premise checks: a mark, and footnotes under the table) when some
    run of the rows has checks."""
    notes = HealthNotes()
    checked = any(checks is not None for row in rows for _, checks in row.get("health", []))
    header = ["method", "dataset options", "protocol", "selection", "seeds", *[f"{c} %" for c in columns], "time s"]
    header += ["health"] if checked else []
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
        if checked:
            cells.append(
                notes.mark(f"{row['method_name']} ({row['dataset']}{', ' + opts if opts else ''})", row["health"])
            )
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")


def pivot_markdown(
    rows: Sequence[dict[str, Any]],
    metric: str = "unbiased",
    option: str = "ratio",
    reference: Any = None,
) -> str:
    """Methods as rows, values of ``option`` (e.g. the conflicting ratio) as columns: ``metric`` mean ± std.

    ``reference(method, value) -> float | None`` adds the published number and our difference to each cell; a
    cell whose runs have premise checks ends with their mark (footnotes under the table).
    """
    notes = HealthNotes()
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
            mark = notes.mark(f"{method}, {option} {v}", match[0].get("health", []))
            cells.append(f"{text} {mark}" if mark else text)
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")
