"""docs/extending.md's example plugin (a dataset, a model and a method) is the file the page shows, and it runs
through ``train``, ``bench`` and ``tune`` as the page says (at a smaller budget here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from debiaslab.cli.main import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))  # the bench and tune workers are fresh processes
    if "my_extension" not in sys.modules:
        import my_extension  # noqa: F401  (registers once per process; a second import would register twice)


def test_the_page_shows_the_example_files() -> None:
    page = (REPO / "docs" / "extending.md").read_text()
    assert (EXAMPLES / "my_extension.py").read_text().strip() in page
    assert (EXAMPLES / "my_suite.yaml").read_text().strip() in page
    for command in ("debiaslab train --imports my_extension", "debiaslab bench docs/examples/my_suite.yaml"):
        assert command in page


@pytest.mark.slow
def test_the_plugin_runs_through_train_bench_and_tune(plugin: None, tmp_path: Path, capsys) -> None:
    assert main(["datasets", "--imports", "my_extension"]) == 0
    assert "two_blobs" in capsys.readouterr().out

    run = tmp_path / "train"
    args = ["train", "--imports", "my_extension", "--method", "flood", "--dataset", "two_blobs", "--epochs", "3",
            "--lr", "0.01", "--batch-size", "64", "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    final = json.loads((run / "final.json").read_text())
    assert final["method"] == "flood" and final["hparams"]["epochs"] == 3
    assert "small_mlp" in (run / "config.yaml").read_text()  # the dataset's default model

    suite = yaml.safe_load((EXAMPLES / "my_suite.yaml").read_text())
    suite.update(seeds=[0], epochs=2)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert main(["bench", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "bench"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| erm | two_blobs |" in table and "| flood | two_blobs |" in table

    tune = ["tune", "--imports", "my_extension", "--method", "flood", "--dataset", "two_blobs", "--trials", "2",
            "--epochs-cap", "2", "--seeds", "0", "--out", str(tmp_path / "tune"), "--no-progress"]  # fmt: skip
    assert main(tune) == 0
    out = capsys.readouterr().out
    assert "search flood-two_blobs: 2/2 trials done" in out and "final runs:" in out
