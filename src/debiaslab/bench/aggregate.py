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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaslab.bench.health_marks import HealthNotes, recorded_checks
from debiaslab.bench.ledger import InputReader, label_ledger, read_input
from debiaslab.bench.stats import (
    MARKS_LEGEND,
    SEEDS_ONLY_LEGEND,
    RunScores,
    Stats,
    difference_cell,
    interval_cell,
    mark,
    method_line,
    run_scores,
)
from debiaslab.errors import DataError
from debiaslab.evaluation.health import Check
from debiaslab.evaluation.intervals import COUNT_METRICS, Interval
from debiaslab.evaluation.ledger import ledger_text

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
    #: the run's ``final.json`` as read (its per-group test counts and what its ledger is derived from)
    final: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scores(self) -> RunScores:
        """Its seed, test metrics and per-group test counts (a reported rule's record: metrics only)."""
        return run_scores(self.final or {"seed": self.seed, "metrics": self.metrics}, str(self.path),
                          None if self.deployed else self.selection)  # fmt: skip

    def labels(self, inputs: InputReader = read_input) -> str:
        """Its label ledger as one line (``unknown`` when a run it was built on cannot be found by ``inputs``)."""
        try:
            return ledger_text(label_ledger(self.final, None if self.deployed else self.selection, inputs))
        except (DataError, KeyError) as exc:
            log.warning("labels of %s unknown: %s", self.path, exc)
            return "unknown"

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
        final=d,
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
    stats: Stats | None = None,
    inputs: Callable[[Path], InputReader] = lambda _: read_input,
) -> list[dict[str, Any]]:
    """One row per (method, dataset, options, protocol, selection) with a :class:`Cell` per column.

    ``rules``: also a row per further selection rule a run reports (see :func:`per_rule`). A seed counted twice
    in a row (the same rule deployed by one run and reported by another) is counted once, the deployed one kept.
    On the test split, each of :data:`~debiaslab.evaluation.intervals.COUNT_METRICS` among ``columns`` gets its
    95 % interval (``row["intervals"]``); ``row["labels"]`` is the rows' label ledger (``inputs(run_dir)`` finds
    the runs that run was built on), ``row["scores"]`` what :func:`add_differences` pairs.
    """
    stats = stats if stats is not None else Stats()
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
        row["labels"] = " / ".join(dict.fromkeys(r.labels(inputs(r.path)) for r in runs))
        row["scores"] = [r.scores for r in runs] if split == "test" else []
        row["intervals"] = {
            c: stats.interval(row["scores"], c) for c in columns if c in COUNT_METRICS and row["scores"]
        }
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


def add_differences(
    rows: Sequence[dict[str, Any]], reference: str, stats: Stats, metrics: Sequence[str] = ("unbiased", "worst_group")
) -> None:
    """Pair every row with the deployed row of method ``reference`` on the same dataset, options and protocol
    (the row labelled ``reference`` first, else one of that registered method; the same number of processes
    first): ``row["vs"][metric]`` is the paired difference over their shared seeds (None for the reference
    itself, or with no such row); ``row["reference"]`` names it."""

    def key(r: dict[str, Any]) -> tuple:
        return r["dataset"], json.dumps(r["options"], sort_keys=True), r["protocol"]

    candidates = [r for r in rows if r["deployed"] and r["scores"] and reference in (r["method"], r["method_name"])]
    for row in rows:
        same = [r for r in candidates if key(r) == key(row)]
        same.sort(key=lambda r: (r["method"] != reference, r["world_size"] != row["world_size"]))
        ref = same[0] if same else None
        row["reference"] = reference
        row["vs"] = {
            m: None
            if ref is None or ref is row or not row["scores"]
            else stats.difference(row["scores"], ref["scores"], m)
            for m in metrics
        }


def metric_cell(row: dict[str, Any], column: str, style: str = "bracket", show_n: bool = True) -> str:
    """The row's value of ``column``: its 95 % interval where it has one, else mean ± std over seeds."""
    iv: Interval | None = row.get("intervals", {}).get(column)
    return interval_cell(iv, style, show_n) if iv is not None else row[column].format()


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """Every row: its labels, seeds, each column (95 % interval where the runs give one, else mean ± std) and,
    after :func:`add_differences`, the paired differences with the reference; a ``health`` column (the premise
    checks: a mark, and footnotes under the table) when some run of the rows has checks."""
    compared = list(rows[0].get("vs") or {}) if rows else []
    header = ["method", "dataset", "options", "protocol", "selection", "labels", "seeds", *[f"{c} %" for c in columns]]
    header += [f"{m} − {rows[0]['reference']} (points)" for m in compared] + ["time s"]
    notes = HealthNotes()
    checked = any(checks is not None for row in rows for _, checks in row.get("health", []))
    header += ["health"] if checked else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(row["options"].items()) if k != "protocol")
        cells = [
            row["method"],
            row["dataset"],
            opts,
            row["protocol"],
            row["selection"],
            row.get("labels", ""),
            ",".join(map(str, row["seeds"])),
            *[metric_cell(row, c) for c in columns],
            *[difference_cell(row["vs"][m]) if row["vs"][m] is not None else "–" for m in compared],
            row["train_time_s"].format(scale=1.0, digits=0),
        ]
        if checked:
            cells.append(
                notes.mark(f"{row['method_name']} ({row['dataset']}{', ' + opts if opts else ''})", row["health"])
            )
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")


def table_notes(rows: Sequence[dict[str, Any]]) -> str:
    """The lines under a table of :func:`markdown_table`: how its intervals and marks were computed."""
    notes = [f"Cells: mean [{method_line()}] where the runs recorded per-group test counts, else mean ± std."]
    if any(iv.defined and not iv.examples for r in rows for iv in r.get("intervals", {}).values()):
        notes.append(SEEDS_ONLY_LEGEND + ".")
    if any("unknown" in r.get("labels", "") for r in rows):
        notes.append("Labels unknown: a run the row was built on (a base run, a teacher) was not found.")
    if rows and rows[0].get("vs"):
        notes.append(
            "Differences: "
            + MARKS_LEGEND.format(reference=rows[0]["reference"])
            + "; k/n: seeds where the row scored higher."
        )
    return "\n".join(notes)


def pivot_markdown(
    rows: Sequence[dict[str, Any]],
    metric: str = "unbiased",
    option: str = "ratio",
    reference: Any = None,
) -> str:
    """Methods as rows, values of ``option`` (e.g. the conflicting ratio) as columns: ``metric`` (its interval,
    or mean ± std), marked against the reference after :func:`add_differences`.

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
            text = f"{metric_cell(match[0], metric, show_n=False)} (n={len(match[0]['seeds'])})"
            text += f" {mark((match[0].get('vs') or {}).get(metric))}".rstrip()
            ref = reference(method, v) if reference is not None else None
            if ref is not None and not math.isnan(cell.mean):
                text += f" [paper {ref:.1f}, {100 * cell.mean - ref:+.1f}]"
            health = notes.mark(f"{method}, {option} {v}", match[0].get("health", []))
            cells.append(f"{text} {health}" if health else text)
        lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")
