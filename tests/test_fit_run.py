"""A run made from Python (``fit_and_save``) is a run directory like the command line's: ``debiaslab evaluate``,
``predict`` and ``report`` work on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.data.core import GroupDataset
from debiaslab.errors import RunDirError
from debiaslab.methods.registry import get_method
from debiaslab.run.fit import fit_and_save

pytestmark = pytest.mark.usefixtures("one_thread")

HP = {"epochs": 2, "batch_size": 16, "model": "mlp", "model_kwargs": {"width": 8, "depth": 1}}


def write_arrays(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Two classes in 6-d features, an attribute that agrees with the class 80 % of the time, given splits."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, n)
    attr = np.where(g.random(n) < 0.8, y, 1 - y)
    x = (g.normal(size=(n, 6)) + 1.5 * y[:, None] + attr[:, None]).astype(np.float32)
    np.savez(path, x=x, y=y, attr=attr, split=np.arange(n) % 3)
    return path


def test_a_python_run_is_evaluated_predicted_and_reported_by_the_cli(tmp_path: Path, capsys) -> None:
    data = write_arrays(tmp_path / "d.npz")
    bundle = build_dataset("arrays", tmp_path, tmp_path / "c", path=str(data))
    method = get_method("erm")(dataset="arrays", **HP)
    run = tmp_path / "runs" / "erm"
    final = fit_and_save(method, bundle.train, bundle.val, bundle.test, run_dir=run, dataset="arrays",
                         dataset_options={"path": str(data)})  # fmt: skip
    assert method.model_ is not None and method.fit_result_ is not None
    for name in ("config.yaml", "metrics.jsonl", "final.json", "model.pt", "report.md", "test_groups.csv"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "final.json").read_text())["metrics"] == json.loads(json.dumps(final["metrics"]))

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    accuracy = final["metrics"]["test"]["accuracy"]
    assert f"acc {100 * accuracy:.1f}" in out.replace("\n", " ")

    np.savez(tmp_path / "new.npz", x=bundle.test.x[:5].numpy())
    assert main(["predict", str(run), str(tmp_path / "new.npz"), "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    expected = method.predict(bundle.test.x[:5]).tolist()
    assert [int(r.split(",")[1]) for r in rows] == expected

    assert main(["report", str(tmp_path / "runs")]) == 0
    assert "erm" in capsys.readouterr().out

    with pytest.raises(RunDirError, match="already holds a finished run"):
        fit_and_save(get_method("erm")(dataset="arrays", **HP), bundle.train, bundle.val, run_dir=run)


def test_a_python_run_on_unregistered_data_evaluates_with_dataset(tmp_path: Path, capsys) -> None:
    data = write_arrays(tmp_path / "d.npz")
    bundle = build_dataset("arrays", tmp_path, tmp_path / "c", path=str(data))
    own = {
        s: GroupDataset(x=d.x, y=d.y, attr=d.attr, n_classes=2, n_attrs=2, name="my_table", split=s)
        for s, d in bundle.splits().items()
    }
    run = tmp_path / "run"
    final = fit_and_save(get_method("erm")(**HP), own["train"], own["val"], own["test"], run_dir=run)
    assert final["dataset"] == "my_table"
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "'my_table', which is not a registered dataset" in err and "pass --dataset NAME" in err
    code = main(["evaluate", str(run), "--dataset", "arrays", "--data-opt", f"path={data}", "--split", "test"])
    assert code == 0
    assert f"acc {100 * final['metrics']['test']['accuracy']:.1f}" in capsys.readouterr().out.replace("\n", " ")
    assert torch.equal(own["test"].y, bundle.test.y)
