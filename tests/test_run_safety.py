"""The command line never loses a result and forgives a typo: typed hyperparameters and dataset options, checks
before a run directory is touched, --overwrite that keeps the old run until the new one has finished, retries of
runs that failed early, file permissions, batch-job logs, run files (--config) and --version.

Runs train ERM on a tiny ``arrays`` dataset (a few dozen 5-feature examples) for one or two epochs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from debiaslab.cli.main import main
from debiaslab.engine.progress import ProgressReporter, epoch_line
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods.erm import ERM
from debiaslab.run.directory import PREVIOUS, run_dir_state
from debiaslab.utils.io import atomic_write_text
from fixture_trees import make_waterbirds

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--hp", "model_kwargs={width: 8, depth: 1}", "--batch-size", "16", "--no-progress", "--threads", "1"]


class Boom(RuntimeError):
    """A crash inside training (stands for an out-of-memory error, a bug, a kill with a Python exception)."""


@pytest.fixture(scope="module")
def arrays_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    n = 96
    y = np.arange(n) % 2
    attr = (np.arange(n) // 4) % 2
    x = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    path = tmp_path_factory.mktemp("arrays") / "tiny.npz"
    split = rng.permutation(np.array(["train", "train", "val", "test"] * (n // 4)))
    np.savez(path, x=x, y=y, attr=attr, split=split)
    return path


def train_args(arrays_file: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={arrays_file}",
            "--epochs", "2", "--out", str(out), *TINY, *extra]  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


@pytest.fixture
def finished(arrays_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main(train_args(arrays_file, out)) == 0
    return out


# ---------------------------------------------------------------------------------------------- typed values
def test_hyperparameters_are_converted_to_their_declared_types() -> None:
    values = ERM.convert_hparams(
        {"lr": "1e-3", "weight_decay": "1E-4", "epochs": "3", "lr_milestones": "[1, 2]", "grad_clip": "null",
         "report_rules": "val_unbiased", "sparse_static": "yes", "model": "on", "model_kwargs": "{width: 8}"}
    )  # fmt: skip
    assert values == {
        "lr": 0.001, "weight_decay": 0.0001, "epochs": 3, "lr_milestones": (1, 2), "grad_clip": None,
        "report_rules": ("val_unbiased",), "sparse_static": True, "model": "on", "model_kwargs": {"width": 8},
    }  # fmt: skip
    method = ERM(dataset="colored_mnist", lr="1e-3", epochs=2)  # from Python, text works the same
    assert method.hparams.lr == 0.001 and method.hparam_sources["lr"] == "user"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("epochs", "abc", "epochs='abc': expected int"),
        ("epochs", 1.5, "epochs=1.5: expected int"),
        ("lr", "fast", "lr='fast': expected float"),
        ("sparse_static", "maybe", "sparse_static='maybe': expected bool"),
        ("model_kwargs", "[1, 2]", "model_kwargs='[1, 2]': expected dict[str, Any]"),
        ("grad_clip", "high", "grad_clip='high': expected float | None"),
    ],
)
def test_a_bad_value_names_the_hyperparameter_value_and_type(name, value, expected) -> None:
    with pytest.raises(ConfigError, match="hyperparameter") as info:
        ERM.convert_hparams({name: value})
    assert expected in str(info.value)


def test_cli_values_yaml_reads_as_text_train(arrays_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    code = main(train_args(arrays_file, out, "--hp", "lr=1e-3", "--hp", "weight_decay=1e-4",
                           "--data-opt", "val_fraction=1e-1"))  # fmt: skip
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["run"]["hparams"]["lr"] == 0.001 and config["run"]["hparams"]["weight_decay"] == 0.0001
    assert config["resolved_hparams"]["weight_decay"] == 0.0001
    assert config["run"]["dataset_options"]["val_fraction"] == 0.1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--hp", "lr_step_size=abc"], "hyperparameter lr_step_size='abc': expected int"),
        (["--hp", "lr=fast"], "hyperparameter lr='fast': expected float"),
        (["--data-opt", "split_seed=x"], "option split_seed='x': expected int"),
        (["--data-opt", "channels_last=maybe"], "option channels_last='maybe': expected bool"),
    ],
)
def test_cli_bad_value_is_one_line_error(args, expected, arrays_file: Path, tmp_path: Path, capsys) -> None:
    assert main(train_args(arrays_file, tmp_path / "r", *args)) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_documented_waterbirds_command(tmp_path: Path, capsys) -> None:
    """The Waterbirds command of docs/datasets.md (``--hp weight_decay=1e-4`` used to crash with a traceback)."""
    make_waterbirds(tmp_path / "data" / "waterbirds")
    weights = tmp_path / "weights" / "resnet50-imagenet.pth"
    documented = ["train", "--method", "groupdro", "--dataset", "waterbirds", "--data-root", str(tmp_path / "data"),
                  "--hp", "model=resnet50", "--hp", f"model_kwargs={{pretrained: {weights}}}",
                  "--hp", "optimizer=sgd", "--lr", "1e-3", "--hp", "weight_decay=1e-4", "--batch-size", "128",
                  "--epochs", "300", "--data-opt", "workers=16"]  # fmt: skip
    small = ["--data-opt", "image_size=8", "--data-opt", "resize=10", "--data-opt", "normalize=none",
             "--no-progress", "--threads", "1"]  # fmt: skip
    out = tmp_path / "wb"
    # no weights file here: one line naming it, before anything is written
    assert main([*documented, *small, "--out", str(out)]) == 2
    assert str(weights) in one_line_error(capsys)
    assert not (out / "config.yaml").exists()
    # the same command with a small model and budget trains, every value converted
    tiny = ["--hp", "model=mlp", "--hp", "model_kwargs={width: 8, depth: 1}", "--epochs", "1", "--batch-size", "8"]
    assert main([*documented, *small, *tiny, "--out", str(out)]) == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())["resolved_hparams"]
    assert resolved["weight_decay"] == 0.0001 and resolved["lr"] == 0.001 and resolved["optimizer"] == "sgd"


# ---------------------------------------------------------------------------------------------- --overwrite
@pytest.mark.parametrize(
    "typo",
    [
        ["--device", "cpuu"],
        ["--hp", "lr_step_size=abc"],
        ["--hp", "model_kwargs={widht: 8}"],
        ["--data-opt", "split_seed=x"],
        ["--selection", "best"],
        ["--method", "dfr", "--hp", "base_run=no-such-run"],
    ],
)
def test_overwrite_with_a_typo_keeps_the_finished_run(typo, finished: Path, arrays_file: Path, capsys) -> None:
    before = snapshot(finished)
    assert main(train_args(arrays_file, finished, "--overwrite", *typo)) == 2
    one_line_error(capsys)
    assert snapshot(finished) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_runs(finished: Path, arrays_file: Path, monkeypatch) -> None:
    before = snapshot(finished)

    def crash(*args, **kwargs):
        raise Boom("before the first epoch")

    with monkeypatch.context() as m:  # fails before its first epoch: the old run is put back as it was
        m.setattr(Trainer, "run_stage", crash)
        with pytest.raises(Boom):
            main(train_args(arrays_file, finished, "--overwrite"))
    assert snapshot(finished) == before and not (finished / PREVIOUS).exists()

    original = ProgressReporter.epoch_done

    def crash_in_epoch_two(self, stage, epoch, *args, **kwargs):
        if epoch == 2:
            raise Boom("in epoch 2")
        return original(self, stage, epoch, *args, **kwargs)

    with monkeypatch.context() as m:  # fails after an epoch: the new run can be resumed, the old one waits aside
        m.setattr(ProgressReporter, "epoch_done", crash_in_epoch_two)
        with pytest.raises(Boom):
            main(train_args(arrays_file, finished, "--overwrite", "--seed", "3"))
    assert run_dir_state(finished) == "partial"
    assert (finished / PREVIOUS / "final.json").read_bytes() == before["final.json"]
    assert main(train_args(arrays_file, finished, "--resume", "--seed", "3")) == 0
    assert not (finished / PREVIOUS).exists()
    assert json.loads((finished / "final.json").read_text())["seed"] == 3


def test_overwrite_replaces_a_finished_run(finished: Path, arrays_file: Path) -> None:
    assert main(train_args(arrays_file, finished, "--overwrite", "--seed", "5")) == 0
    assert json.loads((finished / "final.json").read_text())["seed"] == 5
    assert not (finished / PREVIOUS).exists()


# ---------------------------------------------------------------------------------------------- early failures
def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_retry(
    arrays_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "r"

    def crash(*args, **kwargs):
        raise Boom("out of memory")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_stage", crash)
        with pytest.raises(Boom):
            main(train_args(arrays_file, out))
    assert (out / "config.yaml").is_file() and run_dir_state(out) == "failed_early"
    capsys.readouterr()
    assert main(train_args(arrays_file, out, "--hp", "lr=1e-2")) == 0  # the corrected retry
    assert "failed before its first epoch" in capsys.readouterr().err
    assert run_dir_state(out) == "finished"
    assert main(train_args(arrays_file, out)) == 2  # a finished run still needs --overwrite
    assert "--overwrite" in one_line_error(capsys)


def test_a_partly_trained_run_needs_resume_or_overwrite(arrays_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "r"
    original = ProgressReporter.epoch_done

    def crash_in_epoch_two(self, stage, epoch, *args, **kwargs):
        if epoch == 2:
            raise Boom("in epoch 2")
        return original(self, stage, epoch, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ProgressReporter, "epoch_done", crash_in_epoch_two)
        with pytest.raises(Boom):
            main(train_args(arrays_file, out))
    assert run_dir_state(out) == "partial"
    capsys.readouterr()
    assert main(train_args(arrays_file, out)) == 2
    assert "--resume" in one_line_error(capsys)
    assert main(train_args(arrays_file, out, "--resume")) == 0


# ---------------------------------------------------------------------------------------------- permissions
def test_files_get_the_umask_permissions(arrays_file: Path, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        out = tmp_path / "r"
        assert main(train_args(arrays_file, out)) == 0
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o644)}
        os.umask(0o027)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "x.txt", "x").stat().st_mode) == 0o640
    finally:
        os.umask(previous)


# ---------------------------------------------------------------------------------------------- logs
def test_batch_logs_show_every_epoch_on_one_unwrapped_line(arrays_file: Path, tmp_path: Path, capsys) -> None:
    """stderr is not a terminal here (captured), as in a batch job."""
    out = tmp_path / "a-rather-long-directory-name-so-that-lines-pass-eighty-columns" / "run"
    assert main(train_args(arrays_file, out)) == 0
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if " epoch " in line and "train loss" in line]
    assert len(epochs) == 2, err
    assert "stage erm epoch 2/2: train loss " in epochs[1] and "| best " in epochs[1] and " s" in epochs[1]
    assert "val_worst_group" in epochs[0]
    assert any(len(line) > 80 for line in err.splitlines()), "lines are wrapped"


def test_epoch_line() -> None:
    class Rule:
        name = "val_unbiased"

    record = {"train_loss": 0.23141, "time_s": 1.27}
    line = epoch_line("erm", 3, 10, record, Rule(), 0.712, (0.72, 2))
    assert line == "stage erm epoch 3/10: train loss 0.2314 | val_unbiased 0.7120 | best 0.7200 (epoch 2) | 1.3 s"


# ---------------------------------------------------------------------------------------------- run files
def test_a_run_repeats_from_its_own_config(arrays_file: Path, tmp_path: Path) -> None:
    first, again = tmp_path / "x", tmp_path / "y"
    assert main(train_args(arrays_file, first, "--epochs", "1", "--hp", "lr=3e-3")) == 0
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(again), "--no-progress",
                 "--threads", "1"]) == 0  # fmt: skip
    a, b = (json.loads((d / "final.json").read_text()) for d in (first, again))
    assert b["metrics"] == a["metrics"] and b["hparams"] == a["hparams"]
    # command-line options go on top of the file
    other = tmp_path / "z"
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(other), "--seed", "4",
                 "--hp", "epochs=2", "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    c = json.loads((other / "final.json").read_text())
    assert c["seed"] == 4 and c["hparams"]["epochs"] == 2 and c["hparams"]["lr"] == 0.003


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"run": {"method": "erm", "dataset": "arrays", "hparamz": {}}}, "unknown key 'run.hparamz'"),
        ({"run": {"method": "erm", "dataset": "arrays"}, "devise": "cpu"}, "unknown key 'devise'"),
        ({"run": {"method": "erm"}}, "key 'run.dataset' is missing"),
        ({"run": {"method": "erm", "dataset": "arrays", "seed": "abc"}}, "run.seed='abc'"),
    ],
)
def test_a_bad_run_file_is_one_line_error(doc, expected, tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = one_line_error(capsys)
    assert expected in err and str(path) in err


def test_train_without_method_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "arrays", "--out", str(tmp_path / "r")]) == 2
    assert "--method" in one_line_error(capsys)


def test_version(capsys) -> None:
    from debiaslab import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"debiaslab {__version__}"


def test_runs_compare_by_converted_values(tmp_path: Path) -> None:
    """A suite saying ``lr: 1e-3`` (text to YAML) matches the run directory that recorded ``lr: 0.001``."""
    from debiaslab.run.train import comparable_identity

    base = {"method": "erm", "dataset": "colored_mnist", "seed": 0, "precision": "fp32"}
    written = {**base, "dataset_options": {"ratio": "1e-2"}, "hparams": {"lr": "1e-3", "report_rules": "val_unbiased"}}
    recorded = {**base, "dataset_options": {"ratio": 0.01}, "hparams": {"lr": 0.001, "report_rules": ["val_unbiased"]}}
    assert comparable_identity(written) == comparable_identity(recorded)
    (tmp_path / "base").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "base")
    dfr = {**base, "method": "dfr", "dataset_options": {}}
    one = comparable_identity({**dfr, "hparams": {"base_run": str(tmp_path / "link"), "n_jobs": 2}})
    assert one == comparable_identity({**dfr, "hparams": {"base_run": str(tmp_path / "base")}})
