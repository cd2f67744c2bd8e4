"""DeNetDM's premise on Biased MNIST, from run records: each expert's validation read-out per seed with the
premise checks the records support (``Method.record_health``), and the experts' read-outs epoch by epoch.

    python benchmarks/denetdm_tables.py benchmarks/results/bmnist-2026-12-04
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import cmnist_tables as ct

from debiaslab.bench.health_marks import MARKS, recorded_checks

EXPERTS = (("deep_expert", "deep expert"), ("shallow_expert", "shallow expert"))


def _pct(x: object) -> str:
    return "–" if not isinstance(x, int | float) or math.isnan(x) else f"{100 * x:.1f}"


def _split(final: dict) -> str:
    return "val" if final["metrics"].get("val") else "test"


def premise_table(roots: Sequence[Path], dataset: str = "biased_mnist") -> str | None:
    """Seeds as columns: each expert's and the target's validation accuracy (loss) and aligned / conflicting
    accuracy, and the premise checks that did not pass (recorded, or re-scored from the record: said so)."""
    runs = sorted(_finals(roots, dataset), key=lambda f: f["seed"])
    if not runs:
        return None
    lines = [ct.table_head("validation read-out (%)", *[f"seed {r['seed']}" for r in runs])]
    models = [*((lambda f, k=k: f["readouts"][k][_split(f)], name) for k, name in EXPERTS)]
    models.append((lambda f: f["metrics"][_split(f)], "target (deployed)"))
    for get, name in models:
        lines.append(
            f"| {name}: accuracy (loss) | "
            + " | ".join(f"{_pct(get(f)['accuracy'])} ({get(f)['loss']:.3f})" for f in runs)
            + " |"
        )
        lines.append(
            f"| {name}: aligned / conflicting | "
            + " | ".join(f"{_pct(get(f)['aligned'])} / {_pct(get(f)['conflicting'])}" for f in runs)
            + " |"
        )
    cells = []
    for f in runs:
        checks = recorded_checks(f, rescore=True) or []
        bad = [c for c in checks if not c.passed]
        text = ", ".join(f"{MARKS[c.status]} `{c.name}`" for c in bad) or MARKS["ok"]
        cells.append(text + (" (re-scored from the record)" if bad and bad[0].source == "record" else ""))
    lines.append("| premise checks that did not pass | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finals(roots: Sequence[Path], dataset: str) -> list[dict]:
    out = []
    for root in roots:
        for path in sorted(root.rglob("final.json")):
            final = ct.read_final(path)
            if final["method"] == "denetdm" and final["dataset"] == dataset and "readouts" in final:
                out.append(final)
    return out


def epochs_table(run_dir: Path) -> str | None:
    """Per epoch of a run's stage 1 (``metrics.jsonl``): each expert's validation accuracy (loss) and aligned /
    conflicting accuracy."""
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        return None
    lines = [ct.table_head("stage-1 epoch", "deep expert: accuracy (loss)", "deep: aligned / conflicting",
                           "shallow expert: aligned / conflicting")]  # fmt: skip
    for line in log.read_text().splitlines():
        h = json.loads(line)
        if h["stage"] != "experts":
            continue
        deep, shallow = h["val_deep"], h["val_shallow"]
        lines.append(
            f"| {h['epoch']} | {_pct(deep['accuracy'])} ({deep['loss']:.3f}) | {_pct(deep['aligned'])} / "
            f"{_pct(deep['conflicting'])} | {_pct(shallow['aligned'])} / {_pct(shallow['conflicting'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(premise_table(args.roots) or "no DeNetDM records with read-outs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
