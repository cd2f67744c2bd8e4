"""The ULE reading search as a Markdown table of VALIDATION scores only, and the reading it chooses.

Reads ``<root>/<dataset dir>/<label>/seed0/final.json`` (the layout of ``debiaslab bench
benchmarks/suites/ule-search.yaml --out ROOT``; the committed copy is ``benchmarks/results/ule-search``). Each cell
is the validation score of the epoch the run selected (unbiased accuracy on the unbiased validation split), and the
worst-group accuracy on validation beside it. The choice rule, fixed before the runs: the highest mean of the two
benchmarks' validation unbiased accuracy among the ULE readings; ties (within 0.1 point) go to the cheaper
reading. No test number is read.

Run: ``python benchmarks/ule_search_table.py benchmarks/results/ule-search``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

#: (folder under ROOT, folder between the label and seed0, column name)
DATASETS = (("cmnist", "r0.01", "Colored MNIST 1 %"), ("bmnist-rho0.99", "", "Biased MNIST ρ 0.99"))
#: relative cost per epoch (make bench-cost): mask/perturb run the teacher twice, align needs double backprop
COST_ORDER = {"mask": 0, "perturb": 0, "align": 1}


def _load(root: Path) -> dict[str, dict[str, dict]]:
    """``{label: {dataset dir: final.json}}`` for every finished run."""
    out: dict[str, dict[str, dict]] = {}
    for ds, sub, _ in DATASETS:
        for label_dir in sorted(p for p in (root / ds).glob("*") if p.is_dir()):
            final = label_dir / sub / "seed0" / "final.json"
            if final.is_file():
                out.setdefault(label_dir.name, {})[ds] = json.loads(final.read_text())
    return out


def _val(run: dict | None, metric: str) -> float | None:
    return None if run is None else 100 * run["metrics"]["val"][metric]


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def choose(runs: dict[str, dict[str, dict]], mistakes_only: bool = False) -> str | None:
    """The label with the highest mean validation unbiased accuracy over both benchmarks (ULE runs only; with
    ``mistakes_only``, among the readings that look at the student's mistakes)."""
    scored = []
    for label, by_ds in runs.items():
        vals = [_val(by_ds.get(ds), "unbiased") for ds, _, _ in DATASETS]
        any_run = next(iter(by_ds.values()))
        if any_run["method"] != "ule" or None in vals:
            continue
        if mistakes_only and mistakes_read(any_run) == "no":
            continue
        scored.append((statistics.fmean(vals), label, any_run["hparams"].get("omega", "mask")))
    if not scored:
        return None
    best = max(s for s, _, _ in scored)
    near = [(COST_ORDER.get(omega, 0), label) for s, label, omega in scored if s >= best - 0.1]
    return min(near)[1]


def mistakes_read(run: dict) -> str:
    """How a reading looks at the student's mistakes: through the per-example weights of Ω (``student_*``
    weightings), through the saliency of the class the student predicts, both, or not at all."""
    if run["method"] != "ule":
        return "–"
    hp = run["hparams"]
    ways = []
    if hp.get("weighting", "uniform") != "uniform":
        ways.append(f"weights ({hp['weighting']})")
    if hp.get("saliency", "true_logit") == "pred_logit":
        ways.append("predicted-class saliency")
    return " + ".join(ways) or "no"


def table(root: Path) -> str:
    runs = _load(root)
    head = (
        ["reading", "reads the student's mistakes"]
        + [f"{name}: unbiased / worst-group" for _, _, name in DATASETS]
        + ["mean unbiased"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(runs, key=lambda lb: (lb != "erm", lb))
    for label in order:
        by_ds = runs[label]
        cells, unb = [mistakes_read(next(iter(by_ds.values())))], []
        for ds, _, _ in DATASETS:
            run = by_ds.get(ds)
            u, w = _val(run, "unbiased"), _val(run, "worst_group")
            cells.append(f"{_fmt(u)} / {_fmt(w)}")
            unb.append(u)
        mean = statistics.fmean(unb) if None not in unb else None
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(mean)} |")
    chosen = choose(runs)
    lines.append("")
    lines.append(f"Chosen (highest mean validation unbiased accuracy): **{chosen}**")
    reader = choose(runs, mistakes_only=True)
    if reader is not None and reader != chosen:
        lines.append("")
        lines.append(f"Best of the readings that look at the student's mistakes: **{reader}**")
    return "\n".join(lines)


def print_table(make: Callable[[Path], str], doc: str) -> None:
    """The command line of a validation-table script: ``make(ROOT)`` printed; ``doc``'s first line is its help."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("root", type=Path)
    print(make(parser.parse_args().root))


def main() -> None:
    print_table(table, __doc__)


if __name__ == "__main__":
    main()
