"""Plot the REST density sweep: test accuracy against non-zero parameters and training MACs, per ratio.

Reads ``<root>/r<ratio>/d<density>/seed*/final.json`` (what ``runs/rest-sweep`` holds) and, as dense references,
ERM and group-reweighting runs given with ``--erm`` / ``--reweight`` (``<root>/r<ratio>/seed*/final.json``).
Run: ``python benchmarks/rest_sweep_plot.py runs/rest-sweep --erm runs/erm-grid/default --out docs/img/rest-sweep.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure

METRICS = (("unbiased", "unbiased"), ("conflicting", "conflicting"), ("worst_group", "worst-group"))


def sweep_points(root: Path) -> dict[str, list[tuple[float, float, float, dict]]]:
    """Per ratio: (density, non-zero params, training MACs, test metrics) sorted by density."""
    out: dict[str, list] = {}
    for final in root.glob("r*/d*/seed*/final.json"):
        run = json.loads(final.read_text())
        cost = run["extras"].get("cost")
        density = float(final.parts[-3][1:])
        params = cost["params_nonzero"] if cost else None
        macs = cost["train_macs_sparse"] if cost else None
        out.setdefault(final.parts[-4][1:], []).append((density, params, macs, run["metrics"]["test"]))
    return {r: sorted(v, key=lambda p: p[0]) for r, v in out.items()}


def reference(root: Path | None, ratio: str, metric: str) -> float | None:
    if root is None:
        return None
    values = [json.loads(f.read_text())["metrics"]["test"][metric] for f in root.glob(f"r{ratio}/seed*/final.json")]
    return 100 * statistics.fmean(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--erm", type=Path, help="dense ERM runs (mean over the seeds found)")
    parser.add_argument("--reweight", type=Path, help="dense group-reweighting runs (mean over the seeds found)")
    parser.add_argument("--out", type=Path, default=Path("rest-sweep.png"))
    args = parser.parse_args()
    points = sweep_points(args.root)
    ratios = sorted(points, key=float)
    fig = Figure(figsize=(5.2 * len(ratios), 4.2), layout="constrained")
    axes = fig.subplots(1, len(ratios), squeeze=False)[0]
    for ax, ratio in zip(axes, ratios, strict=True):
        rows = points[ratio]
        dense_params = max(p[1] or 0 for p in rows) or None
        xs = [100 * p[0] for p in rows]
        for metric, label in METRICS:
            line = ax.plot(xs, [100 * p[3][metric] for p in rows], marker="o", label=f"REST {label}")[0]
            erm = reference(args.erm, ratio, metric)
            if erm is not None:
                ax.axhline(erm, color=line.get_color(), linestyle=":", linewidth=1, label=f"dense ERM {label}")
            rw = reference(args.reweight, ratio, metric)
            if rw is not None:
                ax.axhline(rw, color=line.get_color(), linestyle="--", linewidth=1, label=f"dense reweight {label}")
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("density = non-zero weights = MACs, % of dense")
        ax.set_ylabel("test accuracy (%)")
        title = f"Colored MNIST {100 * float(ratio):g} % conflicting, LfF MLP, seed 0"
        if dense_params:
            title += f"\n(dense MLP: {dense_params:,} non-zero parameters)"
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(0, 100)
    axes[-1].legend(fontsize=7, loc="lower right")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
