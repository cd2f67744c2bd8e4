"""After a search: train each rule's chosen configuration on seeds as ordinary runs (through ``debiaslab bench``'s
runner, so they are resumable, skipped when finished, and reported as a table); only these runs see the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaslab.bench.runner import BenchResult, run_suite
from debiaslab.bench.suite import DatasetEntry, MethodEntry, Suite


class TuneLines(list):
    """The lines ``debiaslab tune`` prints, and how many final runs did not finish (the command then exits 1)."""

    failed: int = 0


def unfinished(bench: BenchResult) -> int:
    """Final runs of ``bench`` that failed, were blocked, or hold another run."""
    return sum(bench.count(status) for status in ("failed", "blocked", "mismatch"))


@dataclass(frozen=True)
class Chosen:
    """One method's configuration chosen under one rule: its label (row), method, and the run's hyperparameters
    (the fixed ones, the searched values, the epoch cap and the rule as selection)."""

    label: str
    method: str
    hparams: dict[str, Any]
    #: the inferred-groups entry the search trained on (its final runs infer their own, per ratio and seed)
    groups: dict[str, Any] | None = None


def chosen_hparams(fixed: dict[str, Any], best: dict[str, Any], epochs: int, rule: str) -> dict[str, Any]:
    return {**fixed, **best["hparams"], "epochs": epochs, "selection": rule}


def final_suite(
    name: str,
    rule: str,
    chosen: Sequence[Chosen],
    *,
    dataset: str,
    options: dict[str, Any],
    ratios: Sequence[float] | None,
    seeds: Sequence[int],
    description: str = "",
    threads: int = 1,
    device: str = "auto",
    precision: str = "fp32",
    dataset_dir: str | None = None,
    imports: Sequence[str] = (),
) -> Suite:
    """A bench suite of the chosen configurations: every method x ratio x seed, selected by ``rule``."""
    opts = {k: v for k, v in options.items() if not (ratios and k == "ratio")}
    return Suite(
        name=f"{name}-{rule}",
        source=f"configurations chosen by {rule} in search {name}",
        description=description,
        imports=tuple(imports),
        seeds=tuple(seeds),
        threads=threads,
        device=device,
        precision=precision,
        datasets=[DatasetEntry(dataset, opts, tuple(ratios) if ratios else None, dataset_dir or dataset)],
        methods=[MethodEntry(c.method, c.label, dict(c.hparams), c.groups) for c in chosen],
    )


def train_chosen(
    suite: Suite,
    out: str | Path,
    *,
    workers: int | None = None,
    data_root: str | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> BenchResult:
    """Train (or skip, when finished) every run of ``suite`` under ``out`` and write its bench report."""
    return run_suite(suite, out, workers=workers, data_root=data_root, cache_dir=cache_dir, progress=progress)
