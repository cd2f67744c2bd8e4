"""Aggregation of run directories: mean ± std over seeds, pivot by ratio with published numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from debiaslab.bench.aggregate import find_runs, markdown_table, pivot_markdown, summarise
from debiaslab.bench.paper import cmnist_reference
from debiaslab.errors import DataError


def write_run(root: Path, method: str, ratio: float, seed: int, unbiased: float, hparams: dict | None = None) -> None:
    run = root / method / f"r{ratio}" / f"seed{seed}" / "-".join(f"{k}{v}" for k, v in (hparams or {}).items())
    run.mkdir(parents=True)
    final = {
        "method": method,
        "dataset": "colored_mnist",
        "dataset_options": {"ratio": ratio},
        "hparams": hparams or {},
        "seed": seed,
        "protocol": "default",
        "selection": "val_unbiased",
        "metrics": {"test": {"unbiased": unbiased, "accuracy": unbiased}},
        "train_time_s": 10.0,
    }
    (run / "final.json").write_text(json.dumps(final))


def test_mean_std_over_seeds_and_pivot(tmp_path: Path) -> None:
    for seed, value in enumerate((0.40, 0.50, 0.60)):
        write_run(tmp_path, "erm", 0.01, seed, value)
    write_run(tmp_path, "lff", 0.01, 0, 0.75)
    write_run(tmp_path, "lff", 0.01, 0, 0.10, hparams={"q": 0.5})  # other hparams: its own row, not a seed
    for seed in (0, 1):  # DFR's base run differs per seed by design: still one row
        write_run(tmp_path, "dfr", 0.01, seed, 0.8, hparams={"base_run": f"runs/erm/seed{seed}", "n_jobs": 2})
    (tmp_path / "unfinished").mkdir()  # no final.json: skipped
    rows = summarise(find_runs([tmp_path]))
    erm = next(r for r in rows if r["method"] == "erm")
    assert erm["seeds"] == [0, 1, 2]
    assert erm["unbiased"].mean == pytest.approx(0.5)
    assert erm["unbiased"].std == pytest.approx(0.1)
    # no per-group counts recorded: Student's t over the seeds alone (t_2 = 4.303), marked †
    assert "| 50.0 [25.2, 74.8]† |" in markdown_table(rows) and "| 50.0 ± 10.0 |" in markdown_table(rows)
    pivot = pivot_markdown(rows, "unbiased", reference=cmnist_reference)
    assert "| erm | default | val_unbiased | 50.0 [25.2, 74.8]† (n=3) [paper 50.3, -0.3] |" in pivot
    assert "| lff | default | val_unbiased | 75.0 (n=1) [paper 74.0, +1.0] |" in pivot
    assert "| lff (q=0.5) | default | val_unbiased | 10.0 (n=1) |" in pivot
    assert "| dfr | default | val_unbiased | 80.0 [80.0, 80.0]† (n=2) |" in pivot


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "final.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        find_runs([tmp_path])


def test_runs_of_other_world_size_or_global_batch_are_never_pooled(tmp_path: Path) -> None:
    """A two-process run (or one with another global batch) gets its own row, never counted as another seed."""
    for seed, (world, batch) in enumerate([(1, 256), (1, 256), (2, 256), (2, 512), (1, 512)]):
        write_run(tmp_path / f"w{world}b{batch}", "erm", 0.01, seed, 0.5)
        final = next((tmp_path / f"w{world}b{batch}").rglob("final.json"))
        doc = json.loads(final.read_text())
        final.write_text(json.dumps({**doc, "world_size": world, "global_batch_size": batch}))
    rows = summarise(find_runs([tmp_path]))
    assert sorted((r["world_size"], r["global_batch_size"], tuple(r["seeds"])) for r in rows) == [
        (1, 256, (0, 1)),
        (1, 512, (4,)),
        (2, 256, (2,)),
        (2, 512, (3,)),
    ]
    assert {r["method"] for r in rows if r["world_size"] == 2} == {
        "erm [2 processes, batch 256]",
        "erm [2 processes, batch 512]",
    }


def _counted_run(root: Path, method: str, seed: int, correct: list[int], **more) -> None:
    """A run that recorded its per-group test counts (4 groups of 100, the first aligned)."""
    groups = [{"n": 100, "correct": c, "aligned": g == 0} for g, c in enumerate(correct)]
    acc = [c / 100 for c in correct]
    metrics = {"unbiased": sum(acc) / 4, "worst_group": min(acc), "conflicting": sum(acc[1:]) / 3}
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    final = {"method": method, "dataset": "colored_mnist", "dataset_options": {"ratio": 0.01}, "hparams": {},
             "seed": seed, "selection": "val_unbiased", "stages": [{"name": method, "selection": "val_unbiased"}],
             "metrics": {"test": metrics}, "test_report": {"groups": groups}, **more}  # fmt: skip
    (run / "final.json").write_text(json.dumps(final))


def test_rows_carry_intervals_labels_and_paired_differences_with_the_reference(tmp_path: Path) -> None:
    from debiaslab.bench.aggregate import add_differences, table_notes
    from debiaslab.bench.stats import Stats

    for seed in range(3):
        _counted_run(tmp_path, "erm", seed, [99, 40 + seed, 45, 50 - seed])
        _counted_run(tmp_path, "groupdro", seed, [95, 70 + seed, 75, 72 - seed])
        _counted_run(tmp_path, "lff", seed, [97, 40 + 2 * seed, 46 - seed, 49], selection="val_worst_class",
                     stages=[{"name": "lff", "selection": "val_worst_class"}])  # fmt: skip
    stats = Stats()
    rows = summarise(find_runs([tmp_path]), stats=stats)
    add_differences(rows, "erm", stats, ("unbiased",))
    by = {r["method"]: r for r in rows}
    assert by["groupdro"]["labels"] == "train: train groups · select: val groups"
    assert by["lff"]["labels"] == "train: none · select: none"
    erm = by["erm"]["intervals"]["unbiased"]
    assert erm.examples and erm.low < by["erm"]["unbiased"].mean < erm.high
    assert by["erm"]["vs"]["unbiased"] is None  # the reference itself
    assert by["groupdro"]["vs"]["unbiased"].sign == 1 and by["groupdro"]["vs"]["unbiased"].better == 3
    assert by["lff"]["vs"]["unbiased"].sign == 0  # within a point of ERM on every seed: not told apart
    table = markdown_table(rows)
    assert "unbiased − erm (points)" in table and "▲ 3/3" in table and "○" in table
    assert "train: train groups · select: val groups" in table
    notes = table_notes(rows)
    assert "95 % CI = mean ± √((t·SE_seeds)² + (1.96·SE_test)²)" in notes and "▲ / ▼" in notes
