"""Premise checks in tables: a mark per row or cell (✓ all passed, ⚠ a warning, ✗ a failure) and one footnote per
marked row naming the checks that did not pass, with their seeds.

Runs record their checks in ``final.json["health"]``. Runs written before that have none: tables show nothing
for them, unless asked to re-score them from what the record holds (``Method.record_health``), which is then said.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from debiaslab.errors import DebiasLabError
from debiaslab.evaluation.health import Check

log = logging.getLogger(__name__)

MARKS = {"ok": "✓", "warn": "⚠", "fail": "✗"}


def recorded_checks(final: Mapping[str, Any], rescore: bool = False) -> list[Check] | None:
    """The checks a run recorded; for a run without them, with ``rescore``, the checks its method can still
    compute from the record (each marked ``source="record"``); else None."""
    if isinstance(final.get("health"), list):
        return [Check.from_dict(c) for c in final["health"]]
    if not rescore:
        return None
    from debiaslab.methods.registry import get_method

    try:
        return get_method(str(final.get("method"))).record_health(dict(final))
    except (DebiasLabError, KeyError, TypeError, ValueError) as exc:  # an unknown method or an older record layout
        log.debug("no premise checks re-scored for %s: %s", final.get("method"), exc)
        return None


def worst_status(checks: Iterable[Check]) -> str:
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


class HealthNotes:
    """Marks for table rows and the footnotes they point to, numbered in the order rows are marked."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def mark(self, label: str, runs: Sequence[tuple[int, list[Check] | None]]) -> str:
        """The mark of a row of ``runs`` (``(seed, checks or None)``): empty when no run has checks, ``✓`` when
        all pass, else ``⚠`` / ``✗`` with the number of a footnote listing what did not pass."""
        checked = [(seed, checks) for seed, checks in runs if checks is not None]
        if not checked:
            return ""
        every = [c for _, checks in checked for c in checks]
        status = worst_status(every)
        partial = f" ({len(checked)}/{len(runs)} runs checked)" if len(checked) < len(runs) else ""
        if status == "ok":
            return MARKS["ok"] + partial
        self.notes.append(f"{label}: {describe_failures(checked)}{partial}")
        return f"{MARKS[status]} [{len(self.notes)}]"

    def lines(self) -> list[str]:
        """The footnotes, one line each (nothing when no row was marked with one)."""
        return [f"[{i}] {note}" for i, note in enumerate(self.notes, start=1)]

    def block(self) -> str:
        """The footnotes as a paragraph to put under a table ("" when none)."""
        if not self.notes:
            return ""
        head = "Premise checks that did not pass (✗ failed, ⚠ warning; `debiaslab` computes them per run):"
        return "\n".join([head, "", *(line + "  " for line in self.lines())]).rstrip()


def describe_failures(runs: Sequence[tuple[int, list[Check]]]) -> str:
    """``fail name (seeds 0, 1): message; warn name (seed 2): message`` over the runs' checks that did not pass,
    one entry per check name (its first message)."""
    by_name: dict[str, dict[str, Any]] = {}
    for seed, checks in runs:
        for c in checks:
            if c.passed:
                continue
            entry = by_name.setdefault(c.name, {"check": c, "seeds": [], "status": c.status})
            entry["seeds"].append(seed)
            if c.status == "fail":
                entry["status"] = "fail"
    parts = []
    for name, entry in sorted(by_name.items(), key=lambda kv: (kv[1]["status"] != "fail", kv[0])):
        c: Check = entry["check"]
        seeds = sorted(set(entry["seeds"]))
        tags = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"]
        if c.uses_labels:
            tags.append("uses attribute labels")
        if c.source == "record":
            tags.append("re-scored from the record")
        parts.append(f"{entry['status']} `{name}` ({'; '.join(tags)}): {c.message}")
    return "; ".join(parts)
