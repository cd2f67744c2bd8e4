"""What a run shows its user: the stage plan and run directory before training (and which stage ``--epochs``
sets), progress from the Python API without any logging set-up, a note when a search learned nothing, run folders
without data paths in their names, the run an interrupted ``--overwrite`` kept aside, ``evaluate --out``, the
dataset column of ``report``, and ``predict`` returning classes beside ``predict_proba`` / ``predict_logits``."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.methods import get_method
from debiaslab.run.directory import PREVIOUS
from debiaslab.run.train import RunConfig
from debiaslab.utils.paths import options_slug
from toys import toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--batch-size", "16", "--hp", "model_kwargs={width: 8, depth: 1}", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    path = tmp_path_factory.mktemp("arrays") / "my-data.npz"
    np.savez(path, x=rng.normal(size=(64, 5)).astype(np.float32) + y[:, None], y=y, attr=(np.arange(64) // 4) % 2)
    return path


def train(data: Path, out: Path | None, *extra: str) -> list[str]:
    where = ["--out", str(out)] if out is not None else []
    return ["train", "--dataset", "arrays", "--data-opt", f"path={data}", *where, *TINY, *extra]


# ---------------------------------------------------------------------------------------------- the budget
def test_the_plan_and_run_directory_come_before_training(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(train(data, out, "--method", "bam", "--epochs", "1", "--hp", "amplify_epochs=2")) == 0
    err = capsys.readouterr().err
    plan = "bam plan: amplify: 2 epoch(s) (amplify_epochs), lr 0.001, keeps its last epoch; upweight: 1 epoch(s)"
    first_epoch = err.index("stage amplify epoch 1/2")
    assert err.index(f"run directory {out}") < err.index(plan) < first_epoch
    assert "sets the final stage" not in err  # both lengths were given


def test_epochs_says_which_stage_it_sets(data: Path, tmp_path: Path, capsys) -> None:
    assert main(train(data, tmp_path / "run", "--method", "jtt", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    assert "jtt: epochs=1 sets the final stage upweight only; identify runs 1 (identify_epochs)" in err


def test_the_python_api_logs_progress_without_logging_setup(monkeypatch, capsys) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    library = logging.getLogger("debiaslab")
    monkeypatch.setattr(library, "handlers", [])
    monkeypatch.setattr(library, "level", logging.NOTSET)
    train, val = toy_splits()
    get_method("erm")(epochs=2, model_kwargs={"width": 4, "depth": 1}).fit(train, val)
    err = capsys.readouterr().err
    assert "erm plan: erm: 2 epoch(s)" in err and "stage erm epoch 2/2" in err


def test_a_search_whose_trials_all_tie_says_it_learned_nothing() -> None:
    from debiaslab.tune.study import SearchResult, SearchSpec

    spec = SearchSpec(method="erm", dataset="arrays", space={}, rule="val_worst_group", trials=3, epochs=1)
    trials = [
        {"state": "complete", "value": 0.5},
        {"state": "pruned", "value": None},
        {"state": "complete", "value": 0.5},
    ]
    note = SearchResult(spec, {}, trials=trials).tie_note()
    assert note.startswith("all 2 complete trials scored 0.5000 under val_worst_group: the search learned nothing")
    trials[0]["value"] = 0.6
    assert SearchResult(spec, {}, trials=trials).tie_note() == ""


# ---------------------------------------------------------------------------------------------- run folders
def test_default_run_folders_never_hold_a_data_path(data: Path) -> None:
    cfg = RunConfig(method="erm", dataset="arrays", dataset_options={"path": str(data), "n_classes": 2})
    assert cfg.run_dir() == Path("runs") / "arrays-n_classes2-my-data" / "erm" / "seed0"
    assert options_slug({"csv": "labels.csv", "ratio": 0.01}) == "labels-ratio0.01"
    assert options_slug({"root": "C:\\\\photos\\\\pets"}) == "pets"
    from debiaslab.tune.study import SearchSpec

    options = {"path": str(data)}
    spec = SearchSpec("erm", "arrays", space={}, rule="val_worst_group", trials=1, epochs=1, dataset_options=options)
    assert spec.name == "erm-arrays-my-data"


def test_an_interrupted_overwrite_points_at_the_kept_run(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(train(data, out, "--method", "erm", "--epochs", "1")) == 0
    previous = out / PREVIOUS  # what a killed --overwrite leaves: the old run aside, the new one unfinished
    previous.mkdir()
    for name in ("final.json", "model.pt", "config.yaml"):
        (out / name).rename(previous / name)
    (out / "metrics.jsonl").write_text('{"stage": "erm", "epoch": 1}\n')
    capsys.readouterr()
    assert main(train(data, out, "--method", "erm", "--epochs", "1")) == 2
    assert f"kept in {previous}" in capsys.readouterr().err
    assert main(["evaluate", str(out)]) == 2
    assert f"kept in {previous}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- results
def test_evaluate_out_saves_the_result_and_report_names_the_dataset(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs" / "erm"
    assert main(train(data, out, "--method", "erm", "--epochs", "1")) == 0
    assert main(["evaluate", str(out), "--out", str(tmp_path / "eval.json")]) == 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    final = json.loads((out / "final.json").read_text())
    assert saved["dataset"] == "arrays" and set(saved["splits"]) == {"val", "test"}
    assert saved["splits"]["test"]["metrics"]["accuracy"] == pytest.approx(final["metrics"]["test"]["accuracy"])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "| method | dataset | options |" in table and re.search(r"\| erm[^|]* \| arrays \| path=", table)


def test_predict_returns_classes_beside_probabilities_and_logits() -> None:
    train, val = toy_splits()
    method = get_method("erm")(epochs=1, model_kwargs={"width": 4, "depth": 1}).fit(train, val)
    x = val.x[:6]
    logits = method.predict_logits(x)
    assert torch.equal(method.predict(x), logits.argmax(dim=1)) and method.predict(x).dtype == torch.long
    assert torch.allclose(method.predict_proba(x), torch.softmax(logits, dim=1))
    assert torch.equal(method.decision_function(x), logits)


def test_train_imports_plugins(data: Path, tmp_path: Path, monkeypatch) -> None:
    plugin = tmp_path / "plugins" / "tiny_plugin.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "from debiaslab.methods.erm import ERM\n"
        "from debiaslab.methods.registry import register_method\n\n"
        "@register_method('erm_again')\nclass ErmAgain(ERM):\n    summary = 'ERM under another name'\n"
    )
    monkeypatch.syspath_prepend(str(plugin.parent))
    monkeypatch.delitem(sys.modules, "tiny_plugin", raising=False)
    out = tmp_path / "run"
    assert main(train(data, out, "--method", "erm_again", "--epochs", "1", "--imports", "tiny_plugin")) == 0
    assert json.loads((out / "final.json").read_text())["method"] == "erm_again"


def test_a_warning_validation_would_repeat_every_epoch_is_shown_once(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    y, attr = np.arange(96) % 2, (np.arange(96) // 2) % 2
    split = np.where(np.arange(96) % 5 == 0, "val", "train")
    split[(split == "val") & (y == 1) & (attr == 0)] = "test"  # validation lacks group (1, 0)
    split[-8:] = "test"
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.normal(size=(96, 5)).astype(np.float32), y=y, attr=attr, split=split)
    assert main(["-q", *train(data, tmp_path / "run", "--method", "erm", "--epochs", "4")]) == 0
    err = capsys.readouterr().err
    # once for the four validation epochs, once for the final evaluation of the selected model
    assert err.count("1 of 4 groups have no examples (ids 2)") == 2, err
