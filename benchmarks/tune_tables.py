"""Tables of an equal-budget tuning suite's committed records (the output of ``debiaslab tune --suite``, copied to
``benchmarks/results/<name>-<date>/``): the budget, each method's chosen values under each rule with their
validation scores, and, per rule, the test table of the chosen configurations over ratios and seeds beside the
presets' rows. ``benchmarks/make_docs.py`` puts them in the README and ``docs/results/tuned.md``.

Layout read: ``search/<label>/best.json`` (budget, counts, each rule's best trial) and ``final-<rule>/**/final.json``
(the chosen configurations' runs, the only ones that saw the test split).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import cmnist_tables as ct

#: the rules of the tables, in order, and what each one may read
RULE_TITLE = {
    "val_unbiased": "tuned with validation group labels (objective of the choice: validation unbiased accuracy)",
    "val_worst_group": "tuned with validation group labels (objective of the choice: validation worst-group accuracy)",
    "val_worst_class": "tuned without any group labels (objective: validation worst-class accuracy)",
    "val_classdiff": "tuned without any group labels (objective: validation ClassDiff)",
    "val_accuracy": "tuned without any group labels (objective: validation accuracy)",
}
PRUNER = {"hyperband": "Hyperband", "median": "median", "none": "no"}
METRIC_TITLE = {"unbiased": "unbiased", "worst_group": "worst-group"}


def searches(root: Path) -> dict[str, dict]:
    """``{label: best.json}`` of every search under ``root/search`` (a search without ``best.json`` is skipped)."""
    out = {}
    for best in sorted((root / "search").glob("*/best.json")):
        out[best.parent.name] = json.loads(best.read_text())
    return out


def rules(root: Path) -> list[str]:
    """The rules with final runs under ``root``, in :data:`RULE_TITLE` order."""
    found = {p.name.removeprefix("final-") for p in root.glob("final-*") if p.is_dir()}
    for final in root.glob("final-*/**/final.json"):  # rules reported by runs of another rule
        found.update((json.loads(final.read_text()).get("hparams") or {}).get("report_rules", []))
    return [r for r in RULE_TITLE if r in found]


def budget_line(root: Path) -> str | None:
    """The search budget every method had (identical across the suite's searches, or the line says otherwise)."""
    found = searches(root)
    budgets = {json.dumps(b.get("budget"), sort_keys=True) for b in found.values()}
    objectives = {b.get("rule") for b in found.values()}
    if not found:
        return None
    if len(budgets) != 1 or len(objectives) != 1:
        raise SystemExit(f"{root}: the searches differ in budget or objective ({sorted(budgets)}); not a fair table")
    budget = next(iter(found.values()))["budget"]
    ratio = _search_ratio(root)
    return (
        f"Budget, the same for every method: {budget['trials']} trials"
        + (f" at {100 * ratio:g} % conflicting" if ratio is not None else "")
        + f", an epoch cap of {budget['epochs']}, {budget['sampler']} sampler, "
        f"{PRUNER.get(budget['pruner'], budget['pruner'])} pruner driven by "
        f"`{objectives.pop()}` on validation; the chosen configuration of each rule is then trained with its "
        f"{budget['epochs']} epochs at every ratio and seed. No trial evaluated the test split."
    )


def _search_ratio(root: Path) -> float | None:
    import yaml

    for spec in sorted((root / "search").glob("*/search.yaml")):
        doc = yaml.safe_load(spec.read_text()) or {}
        ratio = (doc.get("identity") or {}).get("dataset_options", {}).get("ratio")
        if ratio is not None:
            return float(ratio)
    return None


def tuned_table(
    root: Path, rule: str, order: Sequence[str], presets: Sequence[Path] = (), metrics: Sequence[str] = ("unbiased",)
) -> str:
    """Methods x ratios of the test metrics of ``rule``'s chosen configurations (mean ± std over seeds), each
    followed by the method's preset row from ``presets`` (the default-settings records), labelled as such."""
    tuned = rule_runs(root, rule)
    methods = _ordered({r["method"] for rs in tuned.values() for r in rs}, order)
    preset = ct.load(list(presets), None) if presets else {r: [] for r in ct.RATIOS}
    lines = [ct.table_head("method", "settings", *[f"{100 * float(r):g} %" for r in ct.RATIOS])]
    for method in methods:
        for label, runs in (("tuned", tuned), ("preset", preset)):
            mine = {ratio: [r for r in rs if r["method"] == method] for ratio, rs in runs.items()}
            if not any(mine.values()):
                continue
            cells = [" / ".join(_cell(mine[r], m) for m in metrics) if mine[r] else "–" for r in ct.RATIOS]
            lines.append(f"| {method if label == 'tuned' else ''} | {label} | " + " | ".join(cells) + " |")
    missing = [m for m in order if m not in methods]
    if missing:
        lines += ["", f"Methods of the suite with no {rule} runs recorded: {', '.join(missing)}."]
    return "\n".join(lines)


def rule_runs(root: Path, rule: str) -> dict[str, list[dict]]:
    """Per ratio, the final runs of the configurations ``rule`` chose: those deploying it (``final-<rule>/``), and
    the runs of another rule that chose the same trial and report ``rule`` from the same training (their
    ``selections[rule]`` metrics). A reporting run must have selected on validation in its last stage only."""
    out = ct.load(root / f"final-{rule}", None) if (root / f"final-{rule}").is_dir() else {r: [] for r in ct.RATIOS}
    for folder in sorted(root.glob("final-*")):
        if folder.name == f"final-{rule}":
            continue
        for ratio, runs in ct.load(folder, None).items():
            for run in runs:
                if rule not in (run.get("hparams") or {}).get("report_rules", []):
                    continue
                early = [s for s in run.get("stages", [])[:-1] if s.get("selection") not in (None, "last")]
                if early or rule not in run.get("selections", {}):
                    raise SystemExit(f"{run['_dir']}: reports {rule} but cannot stand for a run trained for it")
                picked = run["selections"][rule]
                out[ratio].append({**run, "metrics": {"val": picked["val"], "test": picked["test"]}})
    return out


def _cell(runs: list[dict], metric: str) -> str:
    return ct.cell([r["metrics"]["test"][metric] for r in runs if r["metrics"]["test"].get(metric) is not None])


def choices_table(root: Path, order: Sequence[str]) -> str:
    """Per method: trials done / pruned, the search's trial time, and each rule's chosen trial, validation score
    and searched values."""
    found = searches(root)
    names = rules(root) or sorted({r for b in found.values() for r in b.get("best", {})})
    lines = [ct.table_head("method", "trials (pruned)", "trial time", "rule", "trial", "val score", "chosen values")]
    for label in _ordered(set(found), order):
        doc = found[label]
        counts = doc.get("counts") or {}
        first = True
        for rule in names:
            best = doc.get("best", {}).get(rule)
            if best is None:
                continue
            values = ", ".join(f"{k}={_short(v)}" for k, v in sorted(best["params"].items()))
            head = (
                f"| {label} | {counts.get('done', '?')} ({counts.get('pruned', '?')}) | "
                f"{_minutes(doc.get('trial_time_s'))} "
                if first
                else "| | | "
            )
            lines.append(f"{head}| {rule} | {best['trial']} | {100 * best['score']:.1f} | {values} |")
            first = False
    return "\n".join(lines)


def _ordered(names: set[str], order: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), m))


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _minutes(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return f"{seconds / 60:.0f} min"
