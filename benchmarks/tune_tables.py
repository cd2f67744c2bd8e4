"""Tables of an equal-budget tuning suite's committed records (the output of ``debiaslab tune --suite``, copied to
``benchmarks/results/<name>-<date>/``): the budget, each method's chosen values under each rule with their
validation scores, and, per rule, the test table of the chosen configurations over ratios and seeds beside the
presets' rows. ``benchmarks/make_docs.py`` puts them in the README and ``docs/results/tuned.md``.

Layout read: ``search/<label>/best.json`` (budget, counts, each rule's best trial) and ``final-<rule>/**/final.json``
(the chosen configurations' runs, the only ones that saw the test split). A suite run in parts (methods added later
with ``--only``) has one folder per part; every function takes one folder or several and reads them as one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cmnist_tables as ct

from debiaslab.bench.health_marks import HealthNotes, recorded_checks
from debiaslab.bench.stats import ABOVE, BELOW, NEITHER, mark
from debiaslab.tune.values import short_value

#: the rules of the tables, in order, and what each one may read
RULE_TITLE = {
    "val_unbiased": "tuned with validation group labels (objective of the choice: validation unbiased accuracy)",
    "val_worst_group": "tuned with validation group labels (objective of the choice: validation worst-group accuracy)",
    "val_worst_class": "tuned without validation group labels (objective: validation worst-class accuracy)",
    "val_classdiff": "tuned without validation group labels (objective: validation ClassDiff)",
    "val_accuracy": "tuned without validation group labels (objective: validation accuracy)",
}
#: a table column's name for each rule
RULE_SHORT = {
    "val_unbiased": "tuned, val unbiased",
    "val_worst_group": "tuned, val worst-group",
    "val_worst_class": "tuned, val worst-class",
    "val_classdiff": "tuned, val ClassDiff",
    "val_accuracy": "tuned, val accuracy",
}
PRUNER = {"hyperband": "Hyperband", "median": "median", "none": "no"}
METRIC_TITLE = {"unbiased": "unbiased", "worst_group": "worst-group"}


@dataclass(frozen=True)
class Axis:
    """The dataset option a suite's final runs vary (a table's columns): Colored MNIST's conflicting ratio,
    Biased MNIST's training correlation rho."""

    option: str
    title: Callable[[float], str]
    values: tuple[str, ...] = ()  # fixed columns; empty: the values the runs have, largest first

    def key(self, run: dict) -> str:
        return f"{(run.get('dataset_options') or {}).get(self.option, '')}"

    def columns(self, runs: Sequence[dict]) -> list[str]:
        if self.values:
            return list(self.values)
        return sorted({self.key(r) for r in runs if self.key(r)}, key=float, reverse=True)


RATIO = Axis("ratio", lambda v: f"{100 * v:g} %", ct.RATIOS)
RHO = Axis("rho", lambda v: f"ρ {v:g}")


Roots = Path | Sequence[Path]


def _roots(root: Roots) -> list[Path]:
    """The folders of a suite's records: one, or the parts of a suite run in several goes."""
    return [root] if isinstance(root, Path) else list(root)


def searches(root: Roots) -> dict[str, dict]:
    """``{label: best.json}`` of every search under each ``root/search`` (a search without ``best.json`` is
    skipped; one method searched in two folders is an error, not a choice between them)."""
    out: dict[str, dict] = {}
    for folder in _roots(root):
        for best in sorted((folder / "search").glob("*/best.json")):
            if best.parent.name in out:
                raise SystemExit(f"{best.parent}: {best.parent.name} is searched in two folders of the suite")
            out[best.parent.name] = json.loads(best.read_text())
    return out


def rules(root: Roots) -> list[str]:
    """The rules with final runs under the folders, in :data:`RULE_TITLE` order."""
    found: set[str] = set()
    for folder in _roots(root):
        found |= {p.name.removeprefix("final-") for p in folder.glob("final-*") if p.is_dir()}
        for final in folder.glob("final-*/**/final.json"):  # rules reported by runs of another rule
            found.update((json.loads(final.read_text()).get("hparams") or {}).get("report_rules", []))
    return [r for r in RULE_TITLE if r in found]


def budget_line(root: Roots, axis: Axis = RATIO) -> str | None:
    """The search budget every method had (identical across the suite's searches, or the line says otherwise)."""
    found = searches(root)
    budgets = {json.dumps(b.get("budget"), sort_keys=True) for b in found.values()}
    objectives = {b.get("rule") for b in found.values()}
    if not found:
        return None
    if len(budgets) != 1 or len(objectives) != 1:
        raise SystemExit(
            f"{_roots(root)[0]}: the searches differ in budget or objective ({sorted(budgets)}); not a fair table"
        )
    budget = next(iter(found.values()))["budget"]
    where = _search_setting(root, axis)
    return (
        f"Budget, the same for every method: {budget['trials']} trials"
        + (f" at {where}" if where else "")
        + f", an epoch cap of {budget['epochs']}, {budget['sampler']} sampler, "
        f"{PRUNER.get(budget['pruner'], budget['pruner'])} pruner driven by "
        f"`{objectives.pop()}` on validation; the chosen configuration of each rule is then trained with its "
        f"{budget['epochs']} epochs at every {'ratio' if axis is RATIO else 'setting'} and seed. No trial evaluated "
        "the test split." + _past_budget(found, budget["trials"])
    )


def _past_budget(found: dict[str, dict], trials: int) -> str:
    """A sentence on trials recorded past the budget (a second worker's, started before the budget was spent):
    they are in the searches' reports, and no rule chose from them."""
    extra = {label: b.get("counts", {}).get("done", trials) - trials for label, b in found.items()}
    extra = {label: n for label, n in extra.items() if n > 0}
    if not extra:
        return ""
    which = "Every search" if len(extra) == len(found) else ", ".join(sorted(extra))
    most = max(extra.values())
    return (
        f" {which} also recorded {'up to ' if len(set(extra.values())) > 1 else ''}{most} "
        f"trial{'s' if most > 1 else ''} past the {trials}, started by its second worker before the budget was "
        f"spent; each rule chose among the first {trials} by trial number."
    )


def _search_setting(root: Roots, axis: Axis) -> str | None:
    """Where the searches ran, e.g. "1 % conflicting" or "ρ 0.99" (from a search's recorded dataset options)."""
    import yaml

    for spec in sorted(s for folder in _roots(root) for s in (folder / "search").glob("*/search.yaml")):
        doc = yaml.safe_load(spec.read_text()) or {}
        value = (doc.get("identity") or {}).get("dataset_options", {}).get(axis.option)
        if value is not None:
            return axis.title(float(value)) + (" conflicting" if axis is RATIO else "")
    return None


@dataclass(frozen=True)
class Cells:
    """How a table shows its runs: ``style`` of the intervals (``bracket``: ``[low, high]``; ``pm``: ``±``
    half-width) and ``labels(run)``, the run's label ledger as one line."""

    style: str = "bracket"
    labels: Callable[[dict], str] = ct.run_labels


def tuned_table(
    root: Roots,
    rule: str,
    order: Sequence[str],
    presets: Sequence[Path] = (),
    metrics: Sequence[str] = ("unbiased",),
    axis: Axis = RATIO,
    dataset: str | None = None,
    cells: Cells = Cells(),
) -> str:
    """Methods x settings (``axis``) of the test metrics of ``rule``'s chosen configurations (95 % intervals over
    seeds and test examples, marked against the preset of the same seeds), each followed by the method's preset
    row from ``presets`` (the default-settings records of ``dataset``), labelled as such, with the labels each
    row read."""
    tuned = rule_runs(root, rule)
    methods = _ordered({r["method"] for r in tuned}, order)
    preset = [r for r in load_runs(presets) if (dataset is None or r["dataset"] == dataset) and r["method"] in methods]
    columns = axis.columns(tuned)
    notes = HealthNotes()
    lines = [ct.table_head("method", "settings", "labels", *[axis.title(float(c)) for c in columns])]
    for method in methods:
        base = {c: [r for r in preset if r["method"] == method and axis.key(r) == c] for c in columns}
        for label, runs in (("tuned", tuned), ("preset", preset)):
            mine = {c: [r for r in runs if r["method"] == method and axis.key(r) == c] for c in columns}
            if not any(mine.values()):
                continue
            against = base if label == "tuned" else None
            row = [
                _marked(_cells(mine[c], metrics, cells, against and against[c]), notes, f"{method} ({label})", mine[c])
                if mine[c]
                else "–"
                for c in columns
            ]
            ledger = _ledger([r for rs in mine.values() for r in rs], cells)
            lines.append(f"| {method if label == 'tuned' else ''} | {label} | {ledger} | " + " | ".join(row) + " |")
    missing = [m for m in order if m not in methods]
    if missing:
        lines += ["", f"Methods of the suite with no {rule} runs recorded: {', '.join(missing)}."]
    return _with_notes(lines, notes)


def rules_table(
    root: Roots,
    order: Sequence[str],
    presets: Sequence[Path] = (),
    metrics: Sequence[str] = ("unbiased", "worst_group"),
    axis: Axis = RHO,
    dataset: str | None = None,
    cells: Cells = Cells(),
) -> str:
    """For a suite trained at one setting: methods x (preset, then each rule's tuned configuration), the test
    metrics over seeds in each cell (tuned cells marked against the preset), and the labels of each column."""
    names = rules(root)
    tuned = {rule: rule_runs(root, rule) for rule in names}
    methods = _ordered({r["method"] for runs in tuned.values() for r in runs}, order)
    preset = [r for r in load_runs(presets) if dataset is None or r["dataset"] == dataset]
    columns = axis.columns([r for runs in tuned.values() for r in runs])
    if len(columns) != 1:
        raise SystemExit(f"{_roots(root)[0]}: final runs at {len(columns)} settings of {axis.option}; expected one")
    where = columns[0]
    heads = ["preset", *[RULE_SHORT.get(rule, rule) for rule in names]]
    notes = HealthNotes()
    lines = [ct.table_head("method", "labels (train · select: " + " / ".join(heads) + ")", *heads)]
    for method in methods:
        row, ledgers = [], []
        base = [r for r in preset if r["method"] == method and axis.key(r) == where]
        for i, runs in enumerate((preset, *tuned.values())):
            mine = [r for r in runs if r["method"] == method and axis.key(r) == where]
            text = _cells(mine, metrics, cells, base if i else None)
            row.append(_marked(text, notes, f"{method} ({heads[i]})", mine) if mine else "–")
            ledgers.append(_ledger(mine, cells) if mine else "")
        lines.append(f"| {method} | {_ledger_columns(ledgers)} | " + " | ".join(row) + " |")
    missing = [m for m in order if m not in methods]
    if missing:
        lines += ["", f"Methods of the suite with no tuned runs recorded: {', '.join(missing)}."]
    return _with_notes(lines, notes)


def family_table(
    root: Roots,
    rule: str,
    order: Sequence[str],
    metric: str = "unbiased",
    axis: Axis = RATIO,
    reference: str = "erm",
) -> str | None:
    """Families x settings: where each family's tuned methods differ from the tuned ``reference`` (the same rule,
    budget and seeds). A cell sorts the family's methods by the mark of their paired 95 % interval of test
    ``metric`` against the reference: ``▲`` above 0, ``○`` holds 0, ``▼`` below, ``–`` not paired (the reference
    has no runs there, or one seed); no method is picked by its test score. None when the reference has no runs
    under ``rule``."""
    from debiaslab.methods.families import FAMILIES
    from debiaslab.methods.registry import get_method

    tuned = rule_runs(root, rule)
    base = [r for r in tuned if r["method"] == reference]
    if not base:
        return None
    columns = axis.columns(tuned)
    by_family: dict[str, list[str]] = {}
    for method in _ordered({r["method"] for r in tuned} - {reference}, order):
        by_family.setdefault(get_method(method).family, []).append(method)
    lines = [ct.table_head("family", "methods", *[axis.title(float(c)) for c in columns])]
    for family in sorted(by_family, key=lambda f: list(FAMILIES).index(f) if f in FAMILIES else len(FAMILIES)):
        row = []
        for c in columns:
            against = [r for r in base if axis.key(r) == c]
            marked: dict[str, list[str]] = {}
            for method in by_family[family]:
                runs = [r for r in tuned if r["method"] == method and axis.key(r) == c]
                if runs:
                    sign = paired_mark(runs, against, metric) if against else ""
                    marked.setdefault(sign or "–", []).append(method)
            cell = " · ".join(f"{s} {', '.join(marked[s])}" for s in (ABOVE, NEITHER, BELOW, "–") if s in marked)
            row.append(cell or "–")
        lines.append(f"| {family} | {len(by_family[family])} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired_mark(runs: Sequence[dict], against: Sequence[dict], metric: str = "unbiased") -> str:
    """The mark of the paired 95 % interval of test ``metric``, ``runs`` minus ``against`` (runs of the same
    seeds are paired): ▲ / ○ / ▼, or '' when fewer than two seeds pair."""
    get = ct.test_metric(metric)
    return mark(
        ct.STATS.difference([ct.scores_of(r, get) for r in runs], [ct.scores_of(r, get) for r in against], metric)
    )


def _cells(runs: list[dict], metrics: Sequence[str], cells: Cells, against: list[dict] | None = None) -> str:
    """The metrics of ``runs`` (one per seed), each marked against ``against`` (the same method's preset)."""
    parts = []
    for metric in metrics:
        get = ct.test_metric(metric)
        text = ct.interval_cell_of(runs, get, cells.style)
        if against:
            text += f" {paired_mark(runs, against, metric)}".rstrip()
        parts.append(text)
    return " / ".join(parts)


def _ledger(runs: list[dict], cells: Cells) -> str:
    return " / ".join(dict.fromkeys(cells.labels(r) for r in runs))


def _ledger_columns(ledgers: Sequence[str]) -> str:
    """``train: none · select: val groups / none`` from one ledger per column (the training's labels once when
    every column has the same)."""
    parts = [text.split(" · select: ") for text in ledgers if text]
    trains = list(dict.fromkeys(p[0] for p in parts))
    if len(trains) == 1 and all(len(p) == 2 for p in parts):
        return f"{trains[0]} · select: " + " / ".join(p[1] for p in parts)
    return " / ".join(ledgers)


def load_runs(roots: Sequence[Path]) -> list[dict]:
    """Every default-protocol ``final.json`` below ``roots`` (with its folder as ``_dir``)."""
    out = []
    for base in roots:
        for final in sorted(base.rglob("final.json")):
            run = dict(ct.read_final(final))
            if run.get("protocol", "default") == "default":
                out.append({**run, "_dir": str(final.parent)})
    return out


def rule_runs(root: Roots, rule: str) -> list[dict]:
    """The final runs of the configurations ``rule`` chose: those deploying it (``final-<rule>/``), and the runs
    of another rule that chose the same trial and report ``rule`` from the same training (their
    ``selections[rule]`` metrics). A reporting run must have selected on validation in its last stage only, or be
    of a method whose earlier stages select by a score of their own (``rule_free_training``)."""
    from debiaslab.methods.registry import get_method

    folders = _roots(root)
    out = load_runs([f / f"final-{rule}" for f in folders])
    for folder in sorted(f for base in folders for f in base.glob("final-*")):
        if folder.name == f"final-{rule}":
            continue
        for run in load_runs([folder]):
            if rule not in (run.get("hparams") or {}).get("report_rules", []):
                continue
            early = [s for s in run.get("stages", [])[:-1] if s.get("selection") not in (None, "last")]
            if early and not get_method(run["method"]).rule_free_training:  # e.g. SSA's predictors: their own score
                raise SystemExit(f"{run['_dir']}: an earlier stage selected its epoch; it cannot stand for {rule}")
            if rule not in run.get("selections", {}):
                raise SystemExit(f"{run['_dir']}: reports {rule} but cannot stand for a run trained for it")
            picked = run["selections"][rule]
            out.append({**run, "metrics": {"val": picked["val"], "test": picked["test"]}, "_rule": rule})
    return out


def _marked(text: str, notes: HealthNotes, label: str, runs: list[dict]) -> str:
    """``text`` followed by the premise-check mark of ``runs`` (nothing for runs that recorded no checks)."""
    health = notes.mark(label, [(r.get("seed", 0), recorded_checks(r)) for r in runs])
    return f"{text} {health}" if health else text


def _with_notes(lines: list[str], notes: HealthNotes) -> str:
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")


def choices_table(root: Roots, order: Sequence[str], suite_rules: Sequence[str] = ()) -> str:
    """Per method: trials done / pruned (and failed by an error of their own: they count against the budget), the
    search's trial time, and each rule's chosen trial, validation score and searched values."""
    found = searches(root)
    names = list(suite_rules) or rules(root) or sorted({r for b in found.values() for r in b.get("best", {})})
    lines = [ct.table_head("method", "trials (pruned)", "trial time", "rule", "trial", "val score", "chosen values")]
    for label in _ordered(set(found), order):
        doc = found[label]
        counts = doc.get("counts") or {}
        first = True
        for rule in names:
            best = doc.get("best", {}).get(rule)
            if best is None:
                continue
            values = ", ".join(f"{k}={short_value(v, digits=3)}" for k, v in sorted(best["params"].items()))
            failed = f"; {counts['failed']} failed" if counts.get("failed") else ""
            head = (
                f"| {label} | {counts.get('done', '?')} ({counts.get('pruned', '?')}{failed}) | "
                f"{_minutes(doc.get('trial_time_s'))} "
                if first
                else "| | | "
            )
            lines.append(f"{head}| {rule} | {best['trial']} | {100 * best['score']:.1f} | {values} |")
            first = False
    return "\n".join(lines)


def _ordered(names: set[str], order: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), m))


def _minutes(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return f"{seconds / 60:.0f} min"
