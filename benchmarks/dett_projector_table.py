"""DeTT's map-projector comparison as a Markdown table of VALIDATION scores only, and the design it chooses.

Reads the layout of ``debiaslab bench benchmarks/suites/dett-projector.yaml --out ROOT`` (the committed copy is
``benchmarks/results/dett-projector-<date>``): per benchmark, the GroupDRO teacher and one DeTT student per
projector design (labels ``dett-<design>``). Each cell is the validation score of the epoch the run selected. The
choice rule, fixed before the runs: the highest mean of the two benchmarks' validation unbiased accuracy; a
difference within 0.5 point keeps the re-implementation's design (``simkd``), the default before the comparison.
No test number is read.

Run: ``python benchmarks/dett_projector_table.py benchmarks/results/dett-projector-2026-12-07``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ule_search_table import DATASETS, _fmt, _load, _val, print_table

#: the design kept when the two are within ``TIE`` points of mean validation unbiased accuracy
INCUMBENT = "simkd"
TIE = 0.5


def _mean_unbiased(by_ds: dict[str, dict]) -> float | None:
    vals = [_val(by_ds.get(ds), "unbiased") for ds, _, _ in DATASETS]
    return None if None in vals else statistics.fmean(vals)  # type: ignore[arg-type]


def choose(runs: dict[str, dict[str, dict]]) -> str | None:
    """The projector design (``map_projector``) chosen by the rule above; None until every student finished."""
    scores = {
        by_ds[next(iter(by_ds))]["hparams"]["map_projector"]: _mean_unbiased(by_ds)
        for by_ds in runs.values()
        if next(iter(by_ds.values()))["method"] == "dett"
    }
    if len(scores) < 2 or None in scores.values() or INCUMBENT not in scores:
        return None
    best = max(scores, key=lambda k: scores[k])  # type: ignore[arg-type,return-value]
    return INCUMBENT if scores[best] - scores[INCUMBENT] <= TIE else best  # type: ignore[operator]


def table(root: Path) -> str:
    runs = _load(root)
    head = ["run", "map projector"] + [f"{name}: unbiased / worst-group" for _, _, name in DATASETS] + ["mean unbiased"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in sorted(runs, key=lambda lb: (runs[lb][next(iter(runs[lb]))]["method"] == "dett", lb)):
        by_ds = runs[label]
        first = next(iter(by_ds.values()))
        cells = [first["hparams"].get("map_projector", "–") if first["method"] == "dett" else "– (teacher)"]
        for ds, _, _ in DATASETS:
            run = by_ds.get(ds)
            cells.append(f"{_fmt(_val(run, 'unbiased'))} / {_fmt(_val(run, 'worst_group'))}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(_mean_unbiased(by_ds))} |")
    chosen = choose(runs)
    lines.append("")
    lines.append(
        f"Chosen (highest mean validation unbiased accuracy; within {TIE} point the re-implementation's "
        f"`{INCUMBENT}` stays): **{chosen if chosen is not None else 'not yet: runs missing'}**"
    )
    return "\n".join(lines)


def main() -> None:
    print_table(table, __doc__)


if __name__ == "__main__":
    main()
