"""CLI: a short real run on Colored MNIST, evaluate, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from debiaslab.cli.main import main

FAST = ["--hp", "model_kwargs={width: 32, depth: 1}", "--no-progress", "--batch-size", "512"]


def run_cli(*args: str) -> int:
    return main(list(args))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:"), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "erm"
    code = run_cli(
        "train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05", "--epochs", "2",
        "--cache-dir", str(cache_dir), "--out", str(out), *FAST,
    )  # fmt: skip
    assert code == 0
    return out


def test_train_writes_the_run_directory(finished_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "final.json", "model.pt", "report.md", "test_groups.csv"):
        assert (finished_run / name).is_file(), name
    final = json.loads((finished_run / "final.json").read_text())
    assert final["selection"] == "val_unbiased" and final["selection_split"] == "val"
    assert 0.0 <= final["metrics"]["test"]["unbiased"] <= 1.0
    assert len((finished_run / "metrics.jsonl").read_text().splitlines()) == 2
    assert "Test accuracy per group" in (finished_run / "report.md").read_text()


def test_evaluate_reproduces_the_test_metrics(finished_run: Path, cache_dir, capsys) -> None:
    from debiaslab.run.train import evaluate_run

    final = json.loads((finished_run / "final.json").read_text())
    reports = evaluate_run(finished_run, cache_dir=str(cache_dir))
    assert reports["test"].metrics["unbiased"] == pytest.approx(final["metrics"]["test"]["unbiased"])
    assert run_cli("evaluate", str(finished_run), "--cache-dir", str(cache_dir)) == 0
    assert "unbiased" in capsys.readouterr().out


def test_finished_run_is_not_overwritten_without_flag(finished_run: Path, cache_dir, capsys) -> None:
    args = ["train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05", "--epochs", "1",
            "--cache-dir", str(cache_dir), "--out", str(finished_run), *FAST]  # fmt: skip
    assert run_cli(*args) == 2
    assert "already holds a finished run" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "nope", "--dataset", "colored_mnist"], "unknown method 'nope'"),
        (["--method", "erm", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["--method", "erm", "--dataset", "colored_mnist", "--ratio", "1.5"], "ratio 1.5"),
        (["--method", "erm", "--dataset", "colored_mnist", "--hp", "foo=1"], "no hyperparameter 'foo'"),
        (["--method", "erm", "--dataset", "colored_mnist", "--hp", "foo"], "key=value"),
        (["--method", "erm", "--dataset", "colored_mnist", "--data-opt", "foo=1"], "no option 'foo'"),
        (["--method", "erm", "--dataset", "colored_mnist", "--selection", "best"], "selection rule"),
    ],
)
def test_bad_input_is_one_line_error(args, expected, cache_dir, tmp_path, capsys) -> None:
    code = run_cli("train", *args, "--cache-dir", str(cache_dir), "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2
    assert expected in one_line_error(capsys)


def test_unwritable_output_directory(cache_dir, tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = run_cli("train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05", "--epochs", "1",
                   "--cache-dir", str(cache_dir), "--out", str(blocker / "run"), *FAST)  # fmt: skip
    assert code == 2
    assert "cannot write to output directory" in one_line_error(capsys)


def test_corrupt_mnist_is_one_line_error(tmp_path, capsys, data_root) -> None:
    bad_root = tmp_path / "data"
    shutil.copytree(data_root / "mnist", bad_root / "mnist")
    target = bad_root / "mnist" / "train-labels-idx1-ubyte.gz"
    os.chmod(target, 0o644)
    with gzip.open(target, "rb") as fh:
        raw = bytearray(fh.read())
    raw[100] ^= 0xFF  # one label flipped: right size, wrong checksum
    with gzip.open(target, "wb") as fh:
        fh.write(bytes(raw))
    code = run_cli("train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05",
                   "--data-root", str(bad_root), "--cache-dir", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "r"), "--data-opt", "download=false", *FAST)  # fmt: skip
    assert code == 2
    err = one_line_error(capsys)
    assert "train-labels-idx1-ubyte" in err


def test_killed_run_resumes_to_the_same_metrics(tmp_path, cache_dir, data_root) -> None:
    """SIGKILL a real training process after its first checkpoint, resume it, compare with an unbroken run."""
    base = [sys.executable, "-m", "debiaslab", "-q", "train", "--method", "erm", "--dataset", "colored_mnist",
            "--ratio", "0.05", "--epochs", "4", "--seed", "1", "--cache-dir", str(cache_dir),
            "--data-root", str(data_root), *FAST]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*base, "--out", str(tmp_path / "full")], check=True, env=env, timeout=600)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*base, "--out", str(cut)], env=env)
    ckpt = cut / "checkpoints" / "erm.last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (cut / "final.json").exists(), "the run finished before it could be killed"
    subprocess.run([*base, "--out", str(cut)], env=env, timeout=600, check=False)  # refuses: unfinished run
    assert not (cut / "final.json").exists()
    subprocess.run([*base, "--out", str(cut), "--resume"], check=True, env=env, timeout=600)
    full = json.loads((tmp_path / "full" / "final.json").read_text())
    resumed = json.loads((cut / "final.json").read_text())
    assert resumed["metrics"] == full["metrics"]
    assert resumed["selected"] == full["selected"]


def test_listing_commands(capsys) -> None:
    assert run_cli("datasets") == 0
    out = capsys.readouterr().out
    assert "colored_mnist" in out and "ratio" in out
    assert run_cli("methods") == 0
    assert "erm" in capsys.readouterr().out


@pytest.mark.parametrize("width", [80, 200])
def test_method_list_never_breaks_a_word_or_a_name(width: int, monkeypatch) -> None:
    """Narrower than the one table needs without breaking words, the list becomes one table per family."""
    import io

    from rich.cells import cell_len
    from rich.console import Console

    from debiaslab.cli import main as cli_main
    from debiaslab.methods.registry import list_methods

    out = io.StringIO()
    monkeypatch.setattr(cli_main, "console", Console(file=out, width=width))
    assert run_cli("methods") == 0
    text = out.getvalue()
    assert max(cell_len(line) for line in text.splitlines()) <= width  # cells: "p̂" is two code points
    cells = {cell.strip() for line in text.splitlines() for cell in line.split("│")}
    assert all(m.name in cells for m in list_methods())
    words = " ".join(text.replace("│", " ").split())
    assert {"cross-entropy", "group-balanced", "class-balanced"} <= set(words.split())  # folded at spaces only
    assert ("family: class-imbalance losses" in words) == (width == 80)  # a title per family when narrow
    assert ("methods by family" in words) == (width == 200)


def test_suite_help_names_every_shipped_suite() -> None:
    from debiaslab.bench.suite import shipped_suites
    from debiaslab.cli.main import build_parser
    from debiaslab.tune.suite import shipped_tune_suites

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    def flat(text: str) -> str:  # argparse wraps lines, also after the hyphen of a name like labelfree-bmnist
        return re.sub(r"-\s+", "-", " ".join(text.split()))

    bench, tune = flat(commands["bench"].format_help()), flat(commands["tune"].format_help())
    assert f"({', '.join(shipped_suites())})" in bench
    assert f"({', '.join(shipped_tune_suites())})" in tune


def test_help_lists_every_command(capsys) -> None:
    from debiaslab.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    text = parser.format_help()  # argparse %-formats every help string here
    assert all(name in text for name in commands)
    assert "95 % intervals" in text


def test_report_aggregates_finished_runs(finished_run: Path, capsys) -> None:
    assert run_cli("report", str(finished_run.parent)) == 0
    out = capsys.readouterr().out
    # the label carries the user-set hyperparameters, so different settings are never pooled as seeds
    assert "| erm (batch_size=512, epochs=2, model_kwargs=" in out
    assert "| ratio=0.05 | default | val_unbiased | train: none · select: val groups | 0 |" in out


def test_plain_log_lines_follow_the_current_stderr(monkeypatch) -> None:
    """A batch job's log handler writes to sys.stderr as it is when a message is logged: a stream swapped (or
    closed) after set-up is never written to."""
    import io
    import logging

    from debiaslab.cli.main import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(logging.INFO)
    monkeypatch.setattr(sys, "stderr", second)
    first.close()
    logging.getLogger("debiaslab.test").info("hello")
    assert "INFO hello" in second.getvalue()
