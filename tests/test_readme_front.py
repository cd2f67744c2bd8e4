"""The README's front page: short, with the install hint and the "which method" table right, no internal notes
(also not in `debiaslab methods`), and its own-data quick start runs end to end typed as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from debiaslab.cli.main import main
from debiaslab.methods.registry import list_methods, methods_that_work

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
INTERNAL = ("[open]", "spec probe", "past the", "second worker", "session")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_front_page_is_short_and_says_how_to_call_the_command() -> None:
    assert len(README.splitlines()) <= 250
    install = README.split("## Install")[1].split("\n## ")[0]
    assert ".venv/bin/debiaslab" in install and "CUDA" in install
    for note in INTERNAL:
        assert note not in README, note


def test_debiaslab_methods_shows_no_internal_notes(capsys) -> None:
    for method in list_methods():
        assert main(["methods", method.name, "--format", "json"]) == 0
        out = capsys.readouterr().out
        for note in INTERNAL[:2]:
            assert note not in out, (method.name, note)
    assert main(["methods", "bam", "--dataset", "Colored_MNIST"]) == 0
    out = capsys.readouterr().out
    assert "bam on colored_mnist" in out and "bam on biased_mnist" not in out and "bam on (no dataset)" not in out


def test_the_which_method_table_matches_the_label_requirements() -> None:
    table = README.split("**Which method, given the labels you have**")[1].split("\n\n")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    listed: set[str] = set()
    for (train_attrs, val_attrs), row in zip([(False, False), (False, True), (True, True)], rows, strict=True):
        names = set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))
        assert names - listed, row  # each row adds methods
        listed |= names
        assert listed <= set(methods_that_work(train_attrs=train_attrs, val_attrs=val_attrs)), row


def quick_start_commands() -> list[str]:
    block = README.split("<!-- quickstart:start -->")[1].split("<!-- quickstart:end -->")[0]
    text = block.split("```bash")[1].split("```")[0].replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_the_own_data_quick_start_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "docs").symlink_to(REPO / "docs")  # a fresh clone's working directory
    monkeypatch.chdir(tmp_path)
    commands = quick_start_commands()
    assert len(commands) == 5
    for command in commands:
        program, *args = shlex.split(command)
        if program == ".venv/bin/python":
            subprocess.run([sys.executable, *args], check=True, cwd=tmp_path)
        else:
            assert program == ".venv/bin/debiaslab", command
            assert main(args) == 0, command
    for path in (
        "pets-lff/final.json",
        "pets-lff/predictions.csv",
        "pets-lff/model.onnx",
        "shapes-groupdro/final.json",
    ):
        assert (tmp_path / "runs" / path).is_file(), path
    predictions = (tmp_path / "runs" / "pets-lff" / "predictions.csv").read_text().splitlines()
    assert predictions[0].startswith("id,prediction") and len(predictions) == 121
