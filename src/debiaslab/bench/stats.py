"""Intervals and paired differences for rows of finished runs (:mod:`debiaslab.evaluation.intervals`), and how a
table cell shows them.

A row is a list of runs, one per seed. Runs that recorded their test split's per-group counts
(``final.json["test_report"]["groups"]``) get an interval over seeds and test examples; runs that did not (a
selection rule reported beside the deployed one keeps its metrics only) get Student's t over the seeds' values,
marked :data:`SEEDS_ONLY_MARK`. Each set of runs is computed once per :class:`Stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from debiaslab.evaluation.intervals import (
    COUNT_METRICS,
    METHOD,
    Difference,
    GroupCounts,
    Interval,
    SeedScores,
    difference,
    interval,
    seed_scores,
)

#: a cell whose interval resamples the seeds only (the runs recorded no per-group counts)
SEEDS_ONLY_MARK = "†"
#: the paired interval against the reference lies above 0, below 0, or holds 0
ABOVE, BELOW, NEITHER = "▲", "▼", "○"
MARKS_LEGEND = (
    f"{ABOVE} / {BELOW}: the paired 95 % interval of the difference with {{reference}} (same seeds, same test "
    f"set) lies above / below 0; {NEITHER}: it holds 0, no difference shown"
)
SEEDS_ONLY_LEGEND = f"{SEEDS_ONLY_MARK}: no per-group counts recorded, the interval resamples the seeds only"


@dataclass(frozen=True)
class RunScores:
    """What the statistics need of one run: its seed, its test metrics, its per-group test counts (or None).
    ``key`` names it for :class:`Stats`' cache (None: not cached)."""

    key: str | None
    seed: int
    values: Mapping[str, float]
    counts: GroupCounts | None = None


def run_scores(final: Mapping[str, Any], key: str | None, rule: str | None = None) -> RunScores:
    """A run's scores from its ``final.json`` (``key``: its folder, None when unknown); ``rule``: those of another
    selection rule it reports (its ``selections[rule]`` metrics, without per-group counts)."""
    seed = int(final.get("seed", 0))
    if rule is not None and rule != final.get("selection"):
        entry = (final.get("selections") or {}).get(rule) or {}
        return RunScores(None if key is None else f"{key}#{rule}", seed, dict(entry.get("test") or {}))
    report = final.get("test_report") or {}
    counts = GroupCounts.from_groups(report["groups"]) if report.get("groups") else None
    return RunScores(key, seed, dict((final.get("metrics") or {}).get("test") or {}), counts)


@dataclass
class Stats:
    """Computes intervals and paired differences of rows of :class:`RunScores`, each set of runs once."""

    _cache: dict[tuple, SeedScores] = field(default_factory=dict)

    def scores(self, runs: Sequence[RunScores], metric: str) -> SeedScores:
        runs = sorted(runs, key=lambda r: r.seed)
        key = (metric, *(r.key for r in runs))
        if None in key or key not in self._cache:
            counted = all(r.counts is not None for r in runs) and _same_groups(runs)
            if counted and metric in COUNT_METRICS:
                scores = seed_scores([r.counts for r in runs], (metric,))[metric]  # type: ignore[misc]
            else:
                scores = SeedScores(tuple(_value(r, metric) for r in runs), None)
            if None in key:
                return scores
            self._cache[key] = scores
        return self._cache[key]

    def interval(self, runs: Sequence[RunScores], metric: str) -> Interval:
        return interval(self.scores(runs, metric))

    def difference(self, runs: Sequence[RunScores], reference: Sequence[RunScores], metric: str) -> Difference | None:
        """``runs − reference`` over the seeds both have (None when they share none)."""
        seeds = sorted({r.seed for r in runs} & {r.seed for r in reference})
        if not seeds:
            return None
        mine = [next(r for r in runs if r.seed == s) for s in seeds]
        theirs = [next(r for r in reference if r.seed == s) for s in seeds]
        return difference(self.scores(mine, metric), self.scores(theirs, metric))


def _same_groups(runs: Sequence[RunScores]) -> bool:
    first = runs[0].counts
    return all(r.counts is not None and first is not None and r.counts.same_groups(first) for r in runs)


def _value(run: RunScores, metric: str) -> float:
    v = run.values.get(metric)
    return math.nan if v is None else float(v)


# ---------------------------------------------------------------------------------------------- cells
def interval_cell(iv: Interval, style: str = "bracket", show_n: bool = True) -> str:
    """``84.1 [82.3, 85.9]`` (``bracket``) or ``84.1 ± 1.8`` (``pm``), with :data:`SEEDS_ONLY_MARK` when the
    test examples are not in the interval; ``84.1 (n=1)`` without an interval (``show_n=False``: ``84.1``)."""
    text = iv.bracket(show_n=show_n) if style == "bracket" else iv.plus_minus(show_n=show_n)
    return text + (SEEDS_ONLY_MARK if iv.defined and not iv.examples else "")


def mark(diff: Difference | None) -> str:
    """:data:`ABOVE`, :data:`BELOW` or :data:`NEITHER` (empty when there is nothing to compare)."""
    if diff is None or diff.n < 2:
        return ""
    return {1: ABOVE, -1: BELOW, 0: NEITHER}[diff.sign]


def difference_cell(diff: Difference | None) -> str:
    """``+12.3 [8.1, 16.5] ▲ 3/3`` (points; the seeds where the method scored higher / the seeds paired)."""
    if diff is None:
        return "–"
    if math.isnan(diff.estimate):
        return "n/a"
    text = f"{100 * diff.estimate:+.1f}"
    if diff.defined:
        text += f" [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"
        text += SEEDS_ONLY_MARK if not diff.examples else ""
    return f"{text} {mark(diff)} {diff.better}/{diff.n}".replace("  ", " ")


def method_line() -> str:
    """How the intervals were computed, for the page that shows them."""
    return f"95 % CI = {METHOD}."
