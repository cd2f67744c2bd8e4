"""A search's report: ``search.md`` (budget, rule, space, counts, each rule's chosen values, the trials) and
``search-history.png`` (every trial's validation score, pruned trials at their last reported score, the best so
far), written atomically in the search directory."""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debiaslab.tune.space import describe_space
from debiaslab.tune.values import short_value
from debiaslab.utils.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from debiaslab.tune.study import SearchResult

log = logging.getLogger(__name__)

HISTORY_PNG = "search-history.png"


def write_search_report(result: SearchResult) -> Path:
    out = Path(result.spec.out)
    plot = ""
    from debiaslab.bench import plots

    if plots.matplotlib_available():
        plot_search_history(result, out / HISTORY_PNG)
        plot = HISTORY_PNG
    else:
        log.warning("%s; the search report has no figure", plots.PLOTS_MISSING)
    return atomic_write_text(out / "search.md", search_markdown(result, plot))


def search_markdown(result: SearchResult, plot: str = "") -> str:
    spec, counts = result.spec, result.counts
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    opts = ", ".join(f"{k}={v}" for k, v in spec.dataset_options.items())
    lines = [
        f"# Search `{spec.name}`",
        "",
        f"- method: {spec.method}; dataset: {spec.dataset}{f' ({opts})' if opts else ''}; selection on validation only",
        f"- budget: {spec.trials} trials, epoch cap {spec.epochs}, sampler {spec.sampler}, pruner {spec.pruner}",
        f"- objective: {spec.rule} (validation); every rule's validation score is recorded on every trial",
        f"- trials: {counts['done']} done — {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed; {counts['running']} running or abandoned"
        + (f"; {counts['killed']} killed with their worker (replaced)" if counts.get("killed") else ""),
    ]
    extra = counts["done"] - spec.trials
    if extra > 0:
        lines.append(
            f"- each rule chooses among the first {spec.trials} trials by number (the budget); {extra} more "
            f"started in another worker before the budget was spent, shown here but never chosen from"
        )
    if result.tie_note():
        lines.append(f"- **{result.tie_note()}**")
    durations = [r["duration_s"] for r in result.trials if r["duration_s"] is not None]
    if durations:
        lines.append(f"- trial time: {sum(durations):.0f} s in all")
    if spec.fixed:
        lines.append("- fixed: " + ", ".join(f"{k}={v}" for k, v in spec.fixed.items()))
    if spec.groups:
        settings = ", ".join(f"{k}={v}" for k, v in (spec.groups.get("hparams") or {}).items())
        lines.append(
            f"- groups: inferred by {spec.groups['inferrer']}{f' ({settings})' if settings else ''}, no group "
            "label read: every trial trains and is scored on them"
        )
    lines += [f"- report written {now}", "", "## Search space", "", "| hyperparameter | distribution |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in describe_space(spec.space).items()]
    lines += ["", "## Chosen configuration per rule (best complete trial under each rule)", ""]
    if result.best:
        names = list(spec.space)
        lines += ["| rule | trial | val score | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
        for rule, best in result.best.items():
            values = " | ".join(_fmt(best["params"].get(n)) for n in names)
            lines.append(f"| {rule} | {best['trial']} | {best['score']:.4f} | {values} |")
    else:
        lines.append("No complete trial yet.")
    if plot:
        lines += ["", f"![search history]({plot})"]
    lines += ["", "## Trials", "", "| trial | state | value | last step | " + " | ".join(spec.space) + " |"]
    lines.append("|---" * (4 + len(spec.space)) + "|")
    for r in result.trials:
        value = _fmt(r["value"] if r["value"] is not None else r["last_value"])
        params = " | ".join(_fmt(r["params"].get(n)) for n in spec.space)
        lines.append(f"| {r['number']} | {r['state']} | {value} | {r['last_step'] or ''} | {params} |")
    lines += [
        "",
        "Files: `best.json` (each rule's choice), `trials/` (one run directory per trial, no test split).",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "" if value is None else short_value(value)


def plot_search_history(result: SearchResult, path: Path) -> Path:
    """Validation score per trial: complete trials as dots, pruned ones as crosses at their last reported score,
    failed ones as marks on the axis, and the best complete score so far as a step line."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spec = result.spec
    fig = Figure(figsize=(6.4, 3.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    minimise = spec.direction == "minimize"
    best, xs, ys = None, [], []
    for state, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:gray")):
        rows = [r for r in result.trials if r["state"] == state]
        key = "value" if state == "complete" else "last_value"
        pts = [(r["number"], r[key]) for r in rows if r[key] is not None and math.isfinite(r[key])]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, label=state, zorder=3)
    for r in result.trials:
        if r["state"] == "complete" and r["value"] is not None:
            better = best is None or (r["value"] < best if minimise else r["value"] > best)
            best = r["value"] if better else best
            xs.append(r["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    failed = [r["number"] for r in result.trials if r["state"] == "fail"]
    if failed:
        ax.scatter(failed, [ax.get_ylim()[0]] * len(failed), marker="v", color="tab:orange", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{spec.rule} (validation)")
    ax.set_title(
        f"{spec.method} on {spec.dataset}: {spec.trials} trials, cap {spec.epochs} epochs, "
        f"{spec.sampler}/{spec.pruner}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))
