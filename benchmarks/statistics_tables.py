"""The statistics page of ``docs/results/``: every method against a reference (paired differences per benchmark
setting) and the methods' average ranks over the settings with Friedman's test and a critical-difference figure.

A setting is one benchmark configuration (Colored MNIST at a ratio, Biased MNIST at a rho) with its rows from
:func:`debiaslab.bench.aggregate.summarise`, already paired with the reference by
:func:`~debiaslab.bench.aggregate.add_differences`. ``benchmarks/make_docs.py`` assembles the page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cmnist_tables as ct
import numpy as np

from debiaslab.bench.stats import difference_cell
from debiaslab.evaluation.intervals import RankTest, rank_test

TITLE = {"unbiased": "unbiased", "worst_group": "worst-group", "conflicting": "conflicting"}
RANKED = ("unbiased", "worst_group")


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: its name and its deployed rows (one per method)."""

    name: str
    rows: list[dict[str, Any]]


def paired_tables(settings: Sequence[Setting], reference: str, metrics: Sequence[str] = RANKED) -> str | None:
    """Per metric, methods x settings of the paired difference with ``reference`` (points, 95 % interval, mark,
    seeds better / seeds paired)."""
    if not settings:
        return None
    methods = list(dict.fromkeys(r["method"] for s in settings for r in s.rows if reference not in _names(r)))
    parts = []
    for metric in metrics:
        parts += [
            f"**Test {TITLE[metric]} accuracy, method − {reference}** (points; [95 % interval]; mark; seeds where "
            f"the method scored higher / seeds paired)",
            "",
            ct.table_head("method", *[s.name for s in settings]),
        ]
        for method in methods:
            cells = []
            for s in settings:
                row = next((r for r in s.rows if r["method"] == method), None)
                cells.append("–" if row is None else difference_cell((row.get("vs") or {}).get(metric)))
            parts.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts).rstrip()


def _names(row: dict[str, Any]) -> tuple[str, str]:
    return row["method"], row["method_name"]


def ranked(settings: Sequence[Setting], metric: str) -> tuple[list[str], np.ndarray]:
    """The methods present in every setting and their mean scores (settings x methods)."""
    common = [m for m in dict.fromkeys(r["method"] for r in settings[0].rows)]
    common = [m for m in common if all(any(r["method"] == m for r in s.rows) for s in settings)]
    scores = np.array(
        [[next(r for r in s.rows if r["method"] == m)[metric].mean for m in common] for s in settings], dtype=float
    )
    return common, scores


def rank_section(settings: Sequence[Setting], figure: str) -> str | None:
    """Average ranks over the settings (1 = best mean score), Friedman's test and the Nemenyi critical
    difference, per metric; the figure's link."""
    if len(settings) < 2:
        return None
    parts = []
    for metric in RANKED:
        methods, scores = ranked(settings, metric)
        test = rank_test(scores, methods)
        from scipy.stats import rankdata

        per_setting = rankdata(-scores, axis=1)
        order = np.argsort(test.average_ranks, kind="stable")
        parts += [
            f"**Test {TITLE[metric]} accuracy: average rank over {test.n_settings} settings** (1 = best mean over "
            f"seeds; the {len(methods)} methods run in every setting)",
            "",
            ct.table_head("method", "average rank", *[s.name for s in settings]),
        ]
        for i in order:
            ranks = " | ".join(f"{per_setting[j, i]:g}" for j in range(len(settings)))
            parts.append(f"| {methods[i]} | {test.average_ranks[i]:.2f} | {ranks} |")
        parts += ["", _verdict(test), ""]
    parts.append(f"![critical-difference diagrams](../img/{figure})")
    return "\n".join(parts)


def _verdict(test: RankTest) -> str:
    """Friedman's statistic and p, the critical difference, and which pairs of methods it separates."""
    names = [test.methods[i] for i in np.argsort(test.average_ranks, kind="stable")]
    ranks = sorted(test.average_ranks)
    apart = [
        f"{names[i]} over {names[j]}"
        for i in range(len(ranks))
        for j in range(i + 1, len(ranks))
        if ranks[j] - ranks[i] > test.critical_difference
    ]
    text = (
        f"Friedman χ² = {test.statistic:.1f} ({len(test.methods)} methods, {test.n_settings} settings), "
        f"p = {test.p_value:.2g}. Nemenyi critical difference at α = {test.alpha:g}: {test.critical_difference:.2f} "
        "ranks; methods whose average ranks differ by less are not shown to differ. "
    )
    if not apart:
        return text + "No pair of methods is that far apart."
    return text + f"Pairs that far apart ({len(apart)}): " + ", ".join(apart) + "."


def critical_difference_figure(settings: Sequence[Setting], path: Path) -> Path | None:
    """Draw the critical-difference diagrams (one per ranked metric) into ``path`` (PNG, rewritten only when its
    bytes change); None with fewer than two settings, without matplotlib, or when ``path`` already holds it."""
    if len(settings) < 2:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tests = []
    for metric in RANKED:
        methods, scores = ranked(settings, metric)
        tests.append((metric, rank_test(scores, methods)))
    k = len(tests[0][1].methods)
    height = 0.9 + 0.22 * (k + 1) / 2
    fig, axes = plt.subplots(len(tests), 1, figsize=(8.5, height * len(tests)))
    for ax, (metric, test) in zip(np.atleast_1d(axes), tests):
        _diagram(ax, test, f"test {TITLE[metric]} accuracy")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    if path.is_file() and path.read_bytes() == buffer.getvalue():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def _diagram(ax: Any, test: RankTest, title: str) -> None:
    """One Demšar critical-difference diagram: the rank axis (1 = best, left), each method's average rank, bars
    joining methods within the critical difference, and the critical difference itself."""
    order = np.argsort(test.average_ranks, kind="stable")
    names = [test.methods[i] for i in order]
    ranks = [test.average_ranks[i] for i in order]
    k = len(names)
    step, half = 0.22, (k + 1) // 2
    ax.set_xlim(-1.2, k + 2.2)
    ax.set_ylim(-step * (half + 1.5), 0.6)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="black", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.06], color="black", lw=1)
        ax.text(r, 0.1, str(r), ha="center", va="bottom", fontsize=8)
    for i, (name, rank) in enumerate(zip(names, ranks)):
        left = i < half
        y = -step * ((i if left else k - 1 - i) + 1)
        x_end = 0.4 if left else k + 0.6
        ax.plot([rank, rank, x_end], [0, y, y], color="black", lw=0.8)
        ax.text(x_end + (-0.08 if left else 0.08), y, f"{name} ({rank:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)  # fmt: skip
    for j, (a, b) in enumerate(test.cliques()):
        y = -0.06 - 0.05 * j
        ax.plot([ranks[a] - 0.05, ranks[b] + 0.05], [y, y], color="tab:red", lw=2.5)
    cd = test.critical_difference
    ax.plot([1, 1 + cd], [0.42, 0.42], color="black", lw=1.5)
    ax.text(1 + cd / 2, 0.46, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{title}: Friedman p = {test.p_value:.2g}, {test.n_settings} settings", fontsize=9)
