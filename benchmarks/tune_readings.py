"""Sentences read from an equal-budget tuning suite's records, so that a page's reading of its tables stays true
as methods are added: which tuned method has the highest mean at each setting (overall, and among those that train
on no group label), where a tuned row is above or below its preset by a paired interval, and which methods both
rules chose the same trial for. ``benchmarks/make_docs.py`` renders them as the ``{{tuned_readings:<suite>}}``
bullets of ``docs/results/tuned*.md``; the pages keep only the interpretation that does not name a method by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

import cmnist_tables as ct
import tune_tables as tt

from debiaslab.bench.stats import ABOVE, BELOW

#: how close (points of mean test accuracy) a runner-up must be to the leader at every setting to be named
NEAR_POINTS = 3.0
#: the tuned method the readings compare with
REFERENCE = "erm"


def _means(runs: Sequence[dict], axis: tt.Axis, metric: str) -> dict[str, dict[str, float]]:
    """``{method: {setting: mean test metric in %}}`` over each cell's seeds."""
    get = ct.test_metric(metric)
    cells: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        cells.setdefault(run["method"], {}).setdefault(axis.key(run), []).append(100 * get(run))
    return {m: {c: fmean(v) for c, v in by.items()} for m, by in cells.items()}


def _settings(columns: Sequence[str], chosen: Sequence[str], axis: tt.Axis) -> str:
    """ "at every ratio" / "at 0.5 and 1 %" / "" (a suite with one setting)."""
    if len(columns) == 1:
        return ""
    if list(chosen) == list(columns):
        return "at every " + ("ratio" if axis is tt.RATIO else "setting")
    values = [axis.title(float(c)) for c in chosen]
    unit = " %" if all(v.endswith(" %") for v in values) else ""
    values = [v.removesuffix(" %") for v in values] if unit else values
    return "at " + (values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]) + unit


def _names(methods: Sequence[str]) -> str:
    quoted = [f"`{m}`" for m in methods]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def leaders(
    root: tt.Roots,
    rule: str,
    order: Sequence[str],
    axis: tt.Axis,
    cells: tt.Cells,
    metric: str = "unbiased",
    ledger: str | None = None,
) -> str | None:
    """Which tuned method has the highest mean test ``metric`` at each setting under ``rule`` (among the runs whose
    label ledger is ``ledger`` when given), with its mean, and the methods within :data:`NEAR_POINTS` of the leader
    at every setting. None when no method qualifies."""
    runs = [r for r in tt.rule_runs(root, rule) if ledger is None or cells.labels(r) == ledger]
    if not runs:
        return None
    means = _means(runs, axis, metric)
    columns = axis.columns(runs)
    top = {c: max(tt._ordered({m for m in means if c in means[m]}, order), key=lambda m: means[m][c]) for c in columns}
    parts = []
    for method in dict.fromkeys(top.values()):
        chosen = [c for c in columns if top[c] == method]
        where = _settings(columns, chosen, axis)
        values = ", ".join(f"{means[method][c]:.1f}" for c in chosen)
        parts.append(f"`{method}`" + (f" {where}" if where else "") + f" ({values})")
    text = "; ".join(parts)
    near = [
        m
        for m in tt._ordered(set(means), order)
        if m not in top.values()
        and all(c in means[m] and means[top[c]][c] - means[m][c] <= NEAR_POINTS for c in columns)
    ]
    if near:
        every = " at every setting" if len(columns) > 1 else ""
        text += f", with {_names(near)} within {NEAR_POINTS:g} points{every}"
    return text


def preset_marks(
    root: tt.Roots,
    rule: str,
    order: Sequence[str],
    presets: Sequence[Path],
    axis: tt.Axis,
    cells: tt.Cells,
    sign: str,
    dataset: str | None = None,
    metric: str = "unbiased",
) -> str | None:
    """The tuned methods whose paired interval of test ``metric`` against their preset (same seeds) lies on the
    ``sign`` side of 0 (:data:`ABOVE` or :data:`BELOW`), each with the settings where it does; None for none."""
    tuned = tt.rule_runs(root, rule)
    methods = tt._ordered({r["method"] for r in tuned}, order)
    preset = [
        r for r in tt.load_runs(presets) if (dataset is None or r["dataset"] == dataset) and r["method"] in methods
    ]
    columns = axis.columns(tuned)
    found = []
    for method in methods:
        chosen = []
        for c in columns:
            mine = [r for r in tuned if r["method"] == method and axis.key(r) == c]
            theirs = [r for r in preset if r["method"] == method and axis.key(r) == c]
            if mine and theirs and tt.paired_mark(mine, theirs, metric) == sign:
                chosen.append(c)
        if chosen:
            where = _settings(columns, chosen, axis)
            found.append(f"`{method}`" + (f" {where}" if where else ""))
    return (found[0] if len(found) == 1 else ", ".join(found[:-1]) + " and " + found[-1]) if found else None


def same_trial(root: tt.Roots, order: Sequence[str], rules: Sequence[str]) -> tuple[list[str], list[str]]:
    """The searched methods whose rules all chose the same trial, and those whose rules chose different ones."""
    same, differ = [], []
    for label, doc in tt.searches(root).items():
        trials = {(doc.get("best") or {}).get(rule, {}).get("trial") for rule in rules}
        if None in trials:
            continue
        (same if len(trials) == 1 else differ).append(label)
    return tt._ordered(set(same), order), tt._ordered(set(differ), order)


def rule_change(
    root: tt.Roots, order: Sequence[str], methods: Sequence[str], rules: Sequence[str], axis: tt.Axis
) -> str | None:
    """For ``methods`` (whose rules chose one trial), how much choosing the epoch by ``rules[1]`` instead of
    ``rules[0]`` moved the mean test unbiased accuracy: the range over methods and settings and the largest drop."""
    if len(rules) != 2 or not methods:
        return None
    first, second = (_means(tt.rule_runs(root, r), axis, "unbiased") for r in rules)
    changes = [
        (second[m][c] - first[m][c], m, c)
        for m in methods
        if m in first and m in second
        for c in first[m]
        if c in second[m]
    ]
    if not changes:
        return None
    low, method, where = min(changes)
    high = max(d for d, _, _ in changes)
    columns = sorted({c for _, _, c in changes}, key=float, reverse=True)
    at = _settings(columns, [where], axis)
    return (
        f"from {low:+.1f} to {high:+.1f} points over these methods"
        + (" and settings" if len(columns) > 1 else "")
        + f" (the largest drop: `{method}`"
        + (f" {at}" if at else "")
        + ")"
    )


def family_summary(
    root: tt.Roots, order: Sequence[str], rules: Sequence[str], axis: tt.Axis, reference: str = REFERENCE
) -> list[str]:
    """A bullet per method family: its tuned methods against tuned ``reference`` (same rule, budget and seeds),
    counting the settings where the paired interval of test unbiased accuracy lies above 0 and below it, under each
    of ``rules`` in turn. Families with no tuned method besides the reference are left out."""
    from debiaslab.methods.families import FAMILIES
    from debiaslab.methods.registry import get_method

    marks: dict[str, list[list[str]]] = {}  # method -> per rule, the marks of its settings
    for rule in rules:
        tuned = tt.rule_runs(root, rule)
        base = [r for r in tuned if r["method"] == reference]
        for method in {r["method"] for r in tuned} - {reference}:
            found = []
            for c in axis.columns(tuned):
                mine = [r for r in tuned if r["method"] == method and axis.key(r) == c]
                theirs = [r for r in base if axis.key(r) == c]
                if mine and theirs:
                    found.append(tt.paired_mark(mine, theirs))
            marks.setdefault(method, [[] for _ in rules])[list(rules).index(rule)] = found
    by_family: dict[str, list[str]] = {}
    for method in tt._ordered(set(marks), order):
        by_family.setdefault(get_method(method).family, []).append(method)
    lines = []
    for family in sorted(by_family, key=lambda f: list(FAMILIES).index(f) if f in FAMILIES else len(FAMILIES)):
        above = [m for m in by_family[family] if any(ABOVE in ms for ms in marks[m])]
        below = [m for m in by_family[family] if any(BELOW in ms for ms in marks[m])]
        never = [m for m in by_family[family] if m not in above and any(ms for ms in marks[m])]
        parts = []
        if above:
            parts.append("above it " + ", ".join(f"`{m}` ({_counts(marks[m], ABOVE)})" for m in above))
        if never:
            parts.append(f"never above it {_names(never)}")
        if below:
            parts.append("below it " + ", ".join(f"`{m}` ({_counts(marks[m], BELOW)})" for m in below))
        if parts:
            lines.append(f"  - {family}: " + "; ".join(parts) + ".")
    return lines


def _counts(marks: Sequence[Sequence[str]], sign: str) -> str:
    """``everywhere`` or ``3/4 · 1/4``: the settings marked ``sign`` under each rule."""
    if all(ms and all(m == sign for m in ms) for ms in marks):
        return "everywhere"
    return " · ".join(f"{sum(m == sign for m in ms)}/{len(ms)}" if ms else "–" for ms in marks)


def readings(
    root: tt.Roots,
    order: Sequence[str],
    rules: Sequence[str],
    presets: Sequence[Path],
    axis: tt.Axis,
    cells: tt.Cells,
    dataset: str | None = None,
) -> str:
    """The generated bullets of a tuned page's reading (means are of test unbiased accuracy, %, over seeds)."""
    names = [r for r in rules if r in tt.rules(root)]
    lines = []
    for rule in names:
        title = tt.RULE_TITLE[rule].split(" (")[0].capitalize()
        top = leaders(root, rule, order, axis, cells)
        text = f"- **Highest mean, {title.lower()}:** {top}."
        reference = [cells.labels(r) for r in tt.rule_runs(root, rule) if r["method"] == REFERENCE]
        if reference:  # the labels the rule alone reads: ERM's ledger
            free = leaders(root, rule, order, axis, cells, ledger=reference[0])
            text += f" Among the methods that read no label beyond ERM's (`{reference[0]}`): {free}."
        lines.append(text)
    for rule in names:
        below = preset_marks(root, rule, order, presets, axis, cells, BELOW, dataset)
        above = preset_marks(root, rule, order, presets, axis, cells, ABOVE, dataset)
        short = tt.RULE_SHORT.get(rule, rule)
        lines.append(
            f"- **Against the preset, {short}:** below it ({BELOW}) {below or 'nowhere'}; above it ({ABOVE}) "
            f"{above or 'nowhere'}."
        )
    families = family_summary(root, order, names, axis)
    if families:
        rules_named = " / ".join(tt.RULE_SHORT.get(r, r).removeprefix("tuned, ") for r in names)
        lines.append(
            f"- **Against tuned ERM, by family** (the settings where a method's paired interval lies above or below "
            f"tuned ERM's, under {rules_named}):"
        )
        lines += families
    same, differ = same_trial(root, order, names)
    if len(names) == 2 and same:
        change = rule_change(root, order, same, names, axis)
        text = f"- **Same trial under both rules:** {_names(same)}" + (
            f"; different trials: {_names(differ)}." if differ else "."
        )
        if change:
            text += (
                f" For the former the tables differ only in the epoch each rule selected: choosing it by "
                f"{tt.RULE_SHORT[names[1]].removeprefix('tuned, ')} instead of "
                f"{tt.RULE_SHORT[names[0]].removeprefix('tuned, ')} moved the mean test unbiased accuracy {change}."
            )
        lines.append(text)
    return "\n".join(lines)
