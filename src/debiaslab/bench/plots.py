"""PNG plots of a suite: the headline metric against the conflicting ratio (with the papers' points), a per-group
accuracy heatmap of one run, and one run's training curves (loss and validation metrics per epoch, stages marked).

matplotlib is an optional extra (``pip install 'debiaslab[plots]'``). Figures are built with the object API on
the Agg canvas (no pyplot, no global backend switch) and written atomically.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from debiaslab.bench.paper import headline_metric, references
from debiaslab.errors import ConfigError
from debiaslab.evaluation.metrics import EvalReport
from debiaslab.utils.io import atomic_write

PLOTS_MISSING = "plots need matplotlib, which is not installed: pip install 'debiaslab[plots]'"
TITLES = {
    "unbiased": "unbiased accuracy",
    "worst_group": "worst-group accuracy",
    "conflicting": "bias-conflicting accuracy",
    "aligned": "bias-aligned accuracy",
    "accuracy": "average accuracy",
    "worst_class": "worst-class accuracy",
    "class_diff": "ClassDiff",
}
DATASET_TITLES = {"colored_mnist": "Colored MNIST", "corrupted_cifar10": "Corrupted CIFAR-10"}
VAL_CURVES = ("unbiased", "worst_group", "accuracy")


def matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> Any:
    if not matplotlib_available():
        raise ConfigError(PLOTS_MISSING)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


# ---------------------------------------------------------------------------------------------- across methods
def plot_metric_vs_ratio(
    rows: Sequence[dict[str, Any]],
    dataset: str,
    path: Path,
    metric: str | None = None,
    subtitle: str = "",
    compare_paper: bool = True,
) -> Path:
    """One panel per method: our test ``metric`` (mean ± std over seeds) against the conflicting ratio, the
    paper's numbers as hollow squares (unless ``compare_paper`` is false: a shortened budget) and our ERM (when in
    the suite) as a grey reference line.

    With a single ratio, a bar chart of all methods at that ratio instead.
    """
    metric = metric or headline_metric(dataset)
    rows = [r for r in rows if r["dataset"] == dataset and r["deployed"] and "ratio" in r["options"]]
    ratios = sorted({r["options"]["ratio"] for r in rows})
    labels = list(dict.fromkeys(r["method"] for r in rows))
    if len(ratios) == 1:
        return _bars_at_ratio(rows, labels, dataset, metric, ratios[0], path, subtitle, compare_paper)
    ncols = min(4, len(labels))
    nrows = math.ceil(len(labels) / ncols)
    fig = _figure(3.3 * ncols, 2.8 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    erm = _series(rows, "erm", metric)
    for ax, label in zip(axes.flat, labels):
        mine = _series(rows, label, metric)
        if erm and label != "erm":
            ax.plot([100 * x for x, _, _ in erm], [m for _, m, _ in erm], color="0.7", ls=":", lw=1.5, label="our ERM")
        ax.errorbar(
            [100 * x for x, _, _ in mine],
            [m for _, m, _ in mine],
            yerr=[s for _, _, s in mine],
            marker="o",
            capsize=3,
            color="tab:blue",
            label="ours (mean ± std)",
        )
        name = next(r["method_name"] for r in rows if r["method"] == label)
        paper = [
            (v, ref.value)
            for v in ratios
            for ref in (references(name, dataset, {"ratio": v}) if compare_paper else [])
            if ref.metric == metric
        ]
        if paper:
            ax.plot(
                [100 * v for v, _ in paper],
                [p for _, p in paper],
                marker="s",
                mfc="none",
                ls="--",
                color="tab:red",
                label="paper",
            )
        ax.set_title(label, fontsize=10)
        ax.set_xscale("log")
        ax.set_xticks([100 * v for v in ratios], [f"{100 * v:g}" for v in ratios])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("conflicting ratio (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"test {metric.replace('_', '-')} (%)")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles), frameon=False)
    title = f"{dataset_title(dataset)}: test {TITLES.get(metric, metric)} vs conflicting ratio"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    return _save(fig, path)


def _series(rows: Sequence[dict[str, Any]], label: str, metric: str) -> list[tuple[float, float, float]]:
    """``(ratio, mean %, std %)`` of ``label``'s deployed rule, by ratio."""
    out = []
    for r in sorted((r for r in rows if r["method"] == label), key=lambda r: r["options"]["ratio"]):
        cell = r[metric]
        if not math.isnan(cell.mean):
            out.append((r["options"]["ratio"], 100 * cell.mean, 100 * cell.std))
    return out


def _bars_at_ratio(
    rows: Sequence[dict[str, Any]],
    labels: list[str],
    dataset: str,
    metric: str,
    ratio: float,
    path: Path,
    subtitle: str,
    compare_paper: bool,
) -> Path:
    fig = _figure(max(6.0, 0.75 * len(labels) + 2.5), 4.2)
    ax = fig.add_subplot()
    xs = list(range(len(labels)))
    means, stds, paper = [], [], []
    for label in labels:
        row = next(r for r in rows if r["method"] == label)
        means.append(100 * row[metric].mean)
        stds.append(100 * row[metric].std)
        refs = references(row["method_name"], dataset, {"ratio": ratio}) if compare_paper else []
        ref = [x.value for x in refs if x.metric == metric]
        paper.append(ref[0] if ref else math.nan)
    several = any(len(r["seeds"]) > 1 for r in rows)
    ax.bar(xs, means, yerr=stds if several else None, capsize=3, color="tab:blue", alpha=0.85, label="ours")
    for x, m in zip(xs, means):  # the value at the bar's foot, clear of the paper's markers near its top
        if not math.isnan(m):
            ax.text(x, 2, f"{m:.1f}", ha="center", va="bottom", fontsize=8, color="white", fontweight="bold")
    if any(not math.isnan(p) for p in paper):
        ax.scatter(xs, paper, marker="s", facecolors="none", edgecolors="tab:red", s=60, zorder=3, label="paper")
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    ax.set_ylabel(f"test {metric.replace('_', '-')} (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    title = f"{dataset_title(dataset)} at {100 * ratio:g} % conflicting: test {TITLES.get(metric, metric)}"
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- one run
def plot_group_heatmap(run_dir: Path, path: Path, label: str) -> Path:
    """Test accuracy per group (class x attribute) of one finished run; bias-aligned cells outlined."""
    final = json.loads((Path(run_dir) / "final.json").read_text())
    report = EvalReport.from_dict(final["test_report"])
    matrix = [[math.nan if v is None else 100 * v for v in row] for row in report.accuracy_matrix()]
    k, a = report.n_classes, report.n_attrs
    fig = _figure(max(5.8, 0.55 * a + 2.4), max(4.2, 0.5 * k + 2.0))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    small = k * a > 64
    for c in range(k):
        for j in range(a):
            v = matrix[c][j]
            text = "–" if math.isnan(v) else f"{v:.0f}"
            color = "black" if not math.isnan(v) and v > 60 else "white"
            ax.text(j, c, text, ha="center", va="center", fontsize=7 if small else 9, color=color)
    from matplotlib.patches import Rectangle

    for row in report.rows:
        if row.aligned:
            ax.add_patch(Rectangle((row.attr - 0.5, row.y - 0.5), 1, 1, fill=False, ec="red", lw=1.8))
    ax.set_xticks(range(a), [report.attr_name(j) for j in range(a)])
    ax.set_yticks(range(k), [report.class_name(c) for c in range(k)])
    ax.set_xlabel("bias attribute" + (" (colour)" if final["dataset"] == "colored_mnist" else ""))
    ax.set_ylabel("class" + (" (digit)" if final["dataset"] == "colored_mnist" else ""))
    fig.colorbar(image, ax=ax, label="test accuracy (%)", shrink=0.9)
    caption = _run_caption(final).replace(", selected", "\nselected", 1)
    ax.set_title(f"{label}: test accuracy per group (%)\n{caption}; red boxes: bias-aligned", fontsize=9)
    return _save(fig, path)


def plot_training_curves(run_dir: Path, path: Path, label: str) -> Path:
    """Training loss and validation metrics per epoch of one run; stages shaded and named, the epochs each
    selection rule picked marked (deployed: solid, reported rules: dotted)."""
    run_dir = Path(run_dir)
    final = json.loads((run_dir / "final.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    stages = list(dict.fromkeys(line["stage"] for line in lines))
    offset, start = {}, 0
    for s in stages:
        offset[s] = start
        start += sum(1 for line in lines if line["stage"] == s)
    xs = [offset[line["stage"]] + line["epoch"] for line in lines]
    fig = _figure(10.5, 3.9)
    loss_ax, val_ax = fig.subplots(1, 2)
    loss = [line.get("train_loss") for line in lines]
    loss_ax.plot(xs, [math.nan if v is None else v for v in loss], marker=".", color="tab:purple")
    positive = [v for v in loss if v is not None and v > 0]
    if positive and max(positive) / min(positive) > 50:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss (mean over steps)")
    loss_ax.set_title("training loss", fontsize=10)
    for key, color in zip(VAL_CURVES, ("tab:blue", "tab:orange", "tab:green")):
        values = [(line.get("val") or {}).get(key) for line in lines]
        if any(v is not None for v in values):
            ys = [math.nan if v is None else 100 * v for v in values]
            val_ax.plot(xs, ys, marker=".", color=color, label=f"val {key.replace('_', '-')}")
    val_ax.set_ylabel("validation accuracy (%)")
    val_ax.set_title("validation metrics", fontsize=10)
    selected = final.get("selected") or {}
    marks = [(final.get("selection", ""), selected.get("stage"), selected.get("epoch"), "-")]
    for rule, entry in (final.get("selections") or {}).items():
        if not entry.get("deployed"):
            marks.append((rule, selected.get("stage"), entry.get("epoch"), ":"))
    for i, (rule, stage, epoch, style) in enumerate(marks):
        if stage in offset and isinstance(epoch, int):
            x = offset[stage] + epoch
            where = f"{stage} epoch {epoch}" if len(stages) > 1 else f"epoch {epoch}"
            val_ax.axvline(x, color=f"C{(i + 4) % 10}", ls=style, lw=1.5, label=f"{rule} → {where}")
    for ax in (loss_ax, val_ax):
        _mark_stages(ax, stages, offset, lines)
        ax.set_xlabel("epoch (all stages)" if len(stages) > 1 else "epoch")
        ax.grid(alpha=0.3)
    val_ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{label}: training curves — {_run_caption(final)}", fontsize=11)
    return _save(fig, path)


def _mark_stages(ax: Any, stages: list[str], offset: dict[str, int], lines: list[dict[str, Any]]) -> None:
    """Shade alternate stages and write each stage's name at the top (only when there are several)."""
    if len(stages) < 2:
        return
    for i, s in enumerate(stages):
        n = sum(1 for line in lines if line["stage"] == s)
        lo, hi = offset[s] + 0.5, offset[s] + n + 0.5
        if i % 2:
            ax.axvspan(lo, hi, color="0.92", zorder=0)
        if i:
            ax.axvline(lo, color="0.5", lw=1, ls="--")
        narrow = n < 0.08 * len(lines)  # a short stage (JTT's one identification epoch): vertical name
        ax.text(
            (lo + hi) / 2 if not narrow else hi,
            0.98,
            s,
            transform=ax.get_xaxis_transform(),
            ha="center" if not narrow else "left",
            va="top",
            fontsize=8,
            rotation=90 if narrow else 0,
        )


def _run_caption(final: dict[str, Any]) -> str:
    opts = final.get("dataset_options") or {}
    ratio = f" at {100 * opts['ratio']:g} % conflicting" if "ratio" in opts else ""
    others = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()) if k != "ratio")
    selected = final.get("selected") or {}
    where = f"epoch {selected.get('epoch')}" if selected.get("epoch") is not None else "its final model"
    return (
        f"{dataset_title(final['dataset'])}{ratio}{' (' + others + ')' if others else ''}, seed {final['seed']}, "
        f"selected by {final.get('selection', '?')} ({where})"
    )
