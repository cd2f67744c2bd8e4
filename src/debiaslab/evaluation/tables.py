"""Rendering of evaluation reports as rich tables and one-line summaries (percent, one decimal).

Kept apart from the metric code so that reports loaded from JSON render exactly like fresh ones. Works on any
object shaped like :class:`~debiaslab.evaluation.metrics.EvalReport` (:class:`ReportLike`): the metric module
imports this one, never the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from rich import box
from rich.table import Table


class ReportLike(Protocol):
    """What the tables read of an evaluation report (``EvalReport`` has all of it)."""

    rows: list[Any]
    class_rows: list[Any]
    metrics: dict[str, float]
    n_classes: int
    n_attrs: int

    @property
    def n_groups(self) -> int: ...

    @property
    def has_groups(self) -> bool: ...

    def class_name(self, y: int) -> str: ...

    def attr_name(self, a: int) -> str: ...


#: Above this many groups the group table becomes unreadable and :func:`render_auto` shows the matrix.
MAX_TABLE_ROWS = 24

_MISSING = "–"


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as percent text; a dash for NaN / None."""
    if x is None or math.isnan(x):
        return _MISSING
    return f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 3) -> str:
    if x is None or math.isnan(x):
        return _MISSING
    return f"{x:.{digits}f}"


def summary_line(metrics: Mapping[str, float]) -> str:
    """``unbiased 71.3 | worst-group 40.2 | aligned 99.1 | conflicting 68.2 | acc 93.0 (%)``.

    Group metrics appear when defined; without attributes the label-free ones (worst-class, class-diff) do.
    """

    def defined(key: str) -> bool:
        v = metrics.get(key)
        return v is not None and not math.isnan(v)

    parts: list[str] = []
    if defined("unbiased"):
        parts += [f"unbiased {pct(metrics['unbiased'])}", f"worst-group {pct(metrics.get('worst_group'))}"]
        if defined("aligned") or defined("conflicting"):
            parts += [
                f"aligned {pct(metrics.get('aligned'))}",
                f"conflicting {pct(metrics.get('conflicting'))}",
            ]
    else:
        parts += [
            f"worst-class {pct(metrics.get('worst_class'))}",
            f"class-diff {pct(metrics.get('class_diff'))}",
        ]
    parts.append(f"acc {pct(metrics.get('accuracy'))}")
    return " | ".join(parts) + " (%)"


def details_line(metrics: Mapping[str, float]) -> str:
    """The metrics :func:`summary_line` leaves out."""
    parts = [
        f"worst-class {pct(metrics.get('worst_class'))}",
        f"mean-class {pct(metrics.get('mean_class'))}",
        f"class-diff {pct(metrics.get('class_diff'))}",
    ]
    wg = metrics.get("weighted_group")
    if wg is not None and not math.isnan(wg):
        parts.append(f"train-weighted {pct(wg)}")
    parts += [f"ECE {pct(metrics.get('ece'))}", f"loss {num(metrics.get('loss'))}"]
    n = metrics.get("n")
    parts.append(f"n {int(n)}" if n is not None and not math.isnan(n) else f"n {_MISSING}")
    return " | ".join(parts)


def _caption(report: ReportLike) -> str:
    return f"{summary_line(report.metrics)}\n{details_line(report.metrics)}"


def render_group_table(report: ReportLike, title: str | None = None) -> Table:
    """One row per group: class, attribute, aligned?, n, accuracy %, mean loss; the summary as caption."""
    table = Table(title=title, caption=_caption(report), caption_justify="left")
    table.add_column("group", justify="right")
    table.add_column("class")
    table.add_column("attribute")
    table.add_column("aligned", justify="center")
    table.add_column("n", justify="right")
    table.add_column("acc %", justify="right")
    table.add_column("loss", justify="right")
    worst = report.metrics.get("worst_group")
    for r in report.rows:
        style = "dim" if r.n == 0 else ("bold red" if worst is not None and r.accuracy == worst else None)
        table.add_row(
            str(r.group),
            report.class_name(r.y),
            report.attr_name(r.attr),
            "yes" if r.aligned else "",
            str(r.n),
            pct(r.accuracy),
            num(r.loss),
            style=style,
        )
    return table


def render_matrix(report: ReportLike, title: str | None = None) -> Table:
    """Accuracy % grid, rows = classes, columns = attribute values, plus each class's overall accuracy.

    Aligned cells are bold, the worst group red, empty groups a dash.
    """
    table = Table(
        title=title or "group accuracy % (rows: class y, columns: attribute a)",
        caption=_caption(report),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    table.add_column("y \\ a")
    for a in range(report.n_attrs):
        table.add_column(report.attr_name(a), justify="right")
    table.add_column("class", justify="right", style="italic")
    worst = report.metrics.get("worst_group")
    for c in range(report.n_classes):
        cells = []
        for a in range(report.n_attrs):
            r = report.rows[c * report.n_attrs + a]
            text = "-" if r.n == 0 else f"{100 * r.accuracy:.0f}"
            if r.n > 0 and worst is not None and r.accuracy == worst:
                text = f"[bold red]{text}[/]"
            elif r.aligned:
                text = f"[bold]{text}[/]"
            cells.append(text)
        table.add_row(report.class_name(c), *cells, pct(report.class_rows[c].accuracy))
    return table


def render_class_table(report: ReportLike, title: str | None = None) -> Table:
    """One row per class (n, accuracy %, loss): all there is to show without attributes."""
    table = Table(title=title, caption=_caption(report), caption_justify="left")
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("acc %", justify="right")
    table.add_column("loss", justify="right")
    for r in report.class_rows:
        table.add_row(report.class_name(r.y), str(r.n), pct(r.accuracy), num(r.loss))
    return table


def render_auto(report: ReportLike, title: str | None = None, max_rows: int = MAX_TABLE_ROWS) -> Table:
    """Class table when no attribute is known, matrix for many groups, else the group table."""
    if not report.has_groups:
        return render_class_table(report, title)
    if report.n_groups > max_rows and report.n_attrs > 1:
        return render_matrix(report, title)
    return render_group_table(report, title)
