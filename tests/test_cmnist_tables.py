"""benchmarks/cmnist_tables.py: the sweep tables read each run's final.json and resolved config, and order rows
by ratio (then setting, or best validation score first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toys import load_benchmark_script


def load_script():
    return load_benchmark_script("cmnist_tables")


def write_run(folder: Path, final: dict, hparams: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "final.json").write_text(json.dumps(final))
    (folder / "config.yaml").write_text(yaml.safe_dump({"resolved_hparams": hparams}))


def jtt_run(ratio: float, score: float, identify_lr: float | None) -> tuple[dict, dict]:
    final = {
        "method": "jtt",
        "dataset_options": {"ratio": ratio},
        "selected": {"score": score, "epoch": 3},
        "metrics": {"val": {"unbiased": score, "worst_group": score / 2}, "test": {"unbiased": score - 0.01}},
        "extras": {"error_set_size": 1234, "error_set_precision": 0.5, "error_set_recall": 0.75},
    }
    hparams = {
        "identify_lr": identify_lr,
        "lr": 0.001,
        "lambda_up": 50,
        "weight_decay": 0.01,
        "identify_epochs": 1,
        "epochs": 30,
    }
    return final, hparams


def test_jtt_tune_rows_by_ratio_then_best_validation(tmp_path: Path) -> None:
    write_run(tmp_path / "a", *jtt_run(0.05, 0.80, None))
    write_run(tmp_path / "b", *jtt_run(0.01, 0.70, 0.0003))
    write_run(tmp_path / "c", *jtt_run(0.05, 0.85, 0.0001))
    table = load_script().jtt_tune_table(tmp_path)
    rows = table.splitlines()[2:]
    assert rows == [  # validation only: the settings were compared on it
        "| 0.01 | 0.0003 | 1 | 50 | 0.01 | 30 | 1,234 | 0.50 / 0.75 | 70.0 | 35.0 | 3 |",
        "| 0.05 | 0.0001 | 1 | 50 | 0.01 | 30 | 1,234 | 0.50 / 0.75 | 85.0 | 42.5 | 3 |",
        "| 0.05 | 0.001 | 1 | 50 | 0.01 | 30 | 1,234 | 0.50 / 0.75 | 80.0 | 40.0 | 3 |",  # None -> the stage-2 lr
    ]
    assert "test" not in table.splitlines()[0]


def test_kd_sweep_reports_what_the_student_kept_of_its_teacher(tmp_path: Path) -> None:
    def final(method: str, unbiased: float) -> dict:
        return {
            "method": method,
            "metrics": {"val": {"unbiased": unbiased, "conflicting": 0.5, "aligned": 0.99}},
            "readouts": {"teacher": {"val": {"unbiased": 0.80}}},
            "extras": {"student_params": 76682},
        }

    write_run(tmp_path / "r0.01" / "kd", final("kd", 0.676), {"model_kwargs": {}, "kd_weight": 0.1, "temperature": 1})
    write_run(tmp_path / "r0.005" / "dett", final("dett", 0.75), {"model_kwargs": {"width": 32, "depth": 2}})
    rows = load_script().kd_sweep_table(tmp_path).splitlines()[2:]
    assert rows == [
        "| 0.005 | MLP 2×32 | dett | – | 76,682 | 80.0 | 75.0 | -5.0 | 50.0 | 99.0 |",
        "| 0.01 | MLP 3×100 | kd | 0.1 / 1 | 76,682 | 80.0 | 67.6 | -12.4 | 50.0 | 99.0 |",
    ]


def test_ule_cand_cells_are_validation_only_per_ratio(tmp_path: Path) -> None:
    def final(val: float, test: float, epoch: int, ratio: float) -> dict:
        return {
            "method": "ule",
            "dataset_options": {"ratio": ratio},
            "selected": {"score": val, "epoch": epoch},
            "metrics": {"val": {"unbiased": val, "worst_group": val / 2}, "test": {"unbiased": test}},
        }

    write_run(tmp_path / "mask" / "r0.01" / "seed0", final(0.64, 0.63, 29, 0.01), {})
    write_run(tmp_path / "mask" / "r0.01" / "seed1", final(0.66, 0.65, 7, 0.01), {})
    write_run(tmp_path / "gce" / "r0.05" / "seed0", final(0.9, 0.91, 4, 0.05), {})
    rows = load_script().ule_cand_table(tmp_path).splitlines()[2:]
    assert rows == [  # validation unbiased / validation worst-group (kept epochs): no test number
        "| gce | – | – | – | 90.0 / 45.0 (4) |",
        "| mask | – | 65.0 / 32.5 (29, 7) | – | – |",
    ]


def test_denetdm_paper_reads_the_last_epoch_from_the_log_and_refuses_validation_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "denetdm" / "r0.005" / "seed0"
    final = {
        "selection_split": "test",
        "metrics": {"test": {"unbiased": 0.747}},
        "readouts": {"shallow_expert": {"test": {"unbiased": 0.719}}},
    }
    write_run(run_dir, final, {})
    log = [{"stage": "experts", "val_shallow": {"unbiased": u}} for u in (0.5, 0.719, 0.646)] + [
        {"stage": "distill", "val": {"unbiased": u}} for u in (0.7, 0.747, 0.728)
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(h) for h in log))
    rows = load_script().denetdm_paper_table(tmp_path).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["74.7 (n=1)", "72.8 (n=1)", "71.9 (n=1)", "64.6 (n=1)"]
    final["selection_split"] = "val"
    (run_dir / "final.json").write_text(json.dumps(final))
    with pytest.raises(SystemExit, match="protocol=paper"):
        load_script().denetdm_paper_table(tmp_path)
