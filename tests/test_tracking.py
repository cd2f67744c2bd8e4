"""Experiment tracking: ``--tensorboard`` and ``--mlflow`` log the per-epoch numbers of ``metrics.jsonl`` and, once
the run is finished, its validation and test metrics and selected epoch from ``final.json``, read back here with
TensorBoard's EventAccumulator and MLflow's client; missing packages are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from debiaslab.cli.main import main
from debiaslab.engine.tracking import MLFLOW_RUN_FILE, TENSORBOARD_DIR, final_metrics, flat_metrics, metric_key
from fixture_trees import make_class_folders

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["train", "--method", "erm", "--dataset", "class_folders", "--data-opt", "root=pets", "--no-progress",
         "--epochs", "2", "--batch-size", "8", "--hp", "model=mlp",
         "--hp", "model_kwargs={width: 8, depth: 1}"]  # fmt: skip


def jsonl_metrics(run: Path) -> dict[str, dict[int, float]]:
    """``{stage/name: {epoch: value}}`` from metrics.jsonl (the numbers the trackers must hold)."""
    out: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name, value in flat_metrics(record):
            out.setdefault(metric_key(record, name), {})[record["epoch"]] = value
    return out


def test_tensorboard_and_mlflow_hold_the_metrics_of_metrics_jsonl(tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_class_folders(tmp_path / "pets")
    run = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main([*TRAIN, "--data-root", str(tmp_path), "--out", str(run), "--tensorboard", "--mlflow", store])
    assert code == 0, capsys.readouterr().err
    expected = jsonl_metrics(run)
    assert {"erm/train_loss", "erm/val/accuracy", "erm/val/worst_class"} <= set(expected)
    final = json.loads((run / "final.json").read_text())
    finals = {name: {0: value} for name, value in final_metrics(final).items()}
    assert finals["final/test/accuracy"] == {0: pytest.approx(final["metrics"]["test"]["accuracy"])}
    assert finals["final/selected_epoch"] == {0: final["selected"]["epoch"]} and "final/erm/selected_epoch" in finals
    expected = {**expected, **finals}

    events = EventAccumulator(str(run / TENSORBOARD_DIR))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, by_epoch in expected.items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got == pytest.approx(by_epoch, rel=1e-6), tag

    client = MlflowClient(tracking_uri=store)
    run_id = (run / MLFLOW_RUN_FILE).read_text().strip()
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["method"] == "erm" and logged.data.params["hp.epochs"] == "2"
    assert set(logged.data.metrics) == set(expected)
    for key, by_epoch in expected.items():
        assert {m.step: m.value for m in client.get_metric_history(run_id, key)} == pytest.approx(by_epoch), key


@pytest.mark.parametrize(("flag", "module", "extra"), [("--tensorboard", "tensorboard", "tensorboard"),
                                                       ("--mlflow", "mlflow", "mlflow")])  # fmt: skip
def test_a_missing_tracker_package_is_one_line_before_the_run_starts(
    tmp_path: Path, monkeypatch, capsys, flag: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    make_class_folders(tmp_path / "pets")
    run = tmp_path / "run"
    assert main([*TRAIN, "--data-root", str(tmp_path), "--out", str(run), flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and f"pip install 'debiaslab[{extra}]'" in err and "Traceback" not in err
    assert not run.exists()


def test_the_trainer_imports_no_tracker_unless_asked() -> None:
    code = (
        "import sys, debiaslab.cli.main, debiaslab.run.train, debiaslab.engine.trainer, debiaslab.run.fit;"
        "bad = [m for m in ('mlflow', 'tensorboard', 'onnx', 'onnxruntime') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
