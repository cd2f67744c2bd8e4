"""Nothing is lost, mixed or silently used when files are corrupted, several processes share a results folder,
processes are killed or disks fill up; every such fault is one ``error:`` line.

Runs train ERM on a tiny ``arrays`` dataset (96 five-feature examples) for one or two epochs; the process tests
start the command line in a subprocess and kill it (or one of its workers) with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from debiaslab.cli.main import main
from debiaslab.engine.checkpoint import save_checkpoint
from debiaslab.engine.integrity import INTEGRITY, content_digest
from debiaslab.engine.progress import ProgressReporter
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DiskFullError, RunInUseError, TrainingError
from debiaslab.run.directory import LOCK, PENDING, PREVIOUS, RESTORING, recover_run_dir, run_dir_lock
from debiaslab.utils.io import _host, atomic_write, atomic_write_text, is_disk_full

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parent
TINY = ["--hp", "model_kwargs={width: 8, depth: 1}", "--batch-size", "16", "--no-progress", "--threads", "1"]


class Boom(RuntimeError):
    """A crash inside training."""


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it, nothing after it runs."""


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
    """The command's one ``error:`` line (log lines may come before it; no traceback anywhere)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def tree(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir`` (but its lock) by relative path."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != LOCK}


@pytest.fixture
def finished(arrays_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main(train_args(arrays_file, out)) == 0
    return out


def crash_in_epoch_two(monkeypatch) -> None:
    """Make the next training die in its second epoch, after the first epoch's checkpoint is written."""
    original = ProgressReporter.epoch_done

    def crash(self, stage, epoch, *args, **kwargs):
        if epoch == 2:
            raise Boom("in epoch 2")
        return original(self, stage, epoch, *args, **kwargs)

    monkeypatch.setattr(ProgressReporter, "epoch_done", crash)


def garble_tensor_bytes(path: Path, n: int = 64, seed: int = 0) -> None:
    """Write ``n`` random bytes over the largest tensor stored in a ``torch.save`` file, as a bad disk would."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    size = min(n, info.file_size)
    raw[start : start + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", "import bench_plugin; from debiaslab.cli.main import run; run()", *args]
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout  # generous: a loaded machine starts Python and torch slowly
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------- corruption
def test_the_checksum_covers_every_value_and_tensor_byte() -> None:
    state = {"modules": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"loss": 0.5}]}
    digest = content_digest(state)
    changed = {**state, "modules": {"w": state["modules"]["w"].clone()}}
    changed["modules"]["w"][1, 2] = 5.000001
    assert content_digest(changed) != digest
    assert content_digest({**state, "epoch": 4}) != digest
    assert content_digest({**state, "history": [{"loss": 0.25}]}) != digest
    assert content_digest({k: state[k] for k in state}) == digest


def test_a_corrupted_checkpoint_is_refused_on_resume(arrays_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        crash_in_epoch_two(m)
        with pytest.raises(Boom):
            main(train_args(arrays_file, out))
    last = out / "checkpoints" / "erm.last.pt"
    garble_tensor_bytes(last)
    capsys.readouterr()
    assert main(train_args(arrays_file, out, "--resume")) == 2
    err = one_line_error(capsys)
    assert str(last) in err and "corrupt" in err and "not used" in err
    assert not (out / "final.json").exists()

    last.write_bytes(b"")  # a file a kill or a full disk left empty
    assert main(train_args(arrays_file, out, "--resume")) == 2
    assert "empty (0 bytes)" in one_line_error(capsys)


def test_an_exploding_loss_stops_the_run_with_one_line(arrays_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        crash_in_epoch_two(m)
        with pytest.raises(Boom):
            main(train_args(arrays_file, out))
    last = out / "checkpoints" / "erm.last.pt"
    state = torch.load(last, weights_only=True)
    record = state.pop(INTEGRITY)
    state["modules"] = {k: v * 1e4 for k, v in state["modules"].items()}  # diverged weights, intact file
    save_checkpoint(last, state, record["config"])
    capsys.readouterr()
    assert main(train_args(arrays_file, out, "--resume")) == 2
    err = one_line_error(capsys)
    assert "loss exploded" in err and "stage 'erm', epoch 2" in err
    assert not (out / "final.json").exists()

    trainer = Trainer(progress=False)
    trainer._check_exploded(torch.tensor(2.3), "s", _Ctx())  # the first step sets the reference
    trainer._check_exploded(torch.tensor(2.3e5), "s", _Ctx())  # large (an annealed penalty) but not 1e6 x: goes on
    with pytest.raises(TrainingError, match="exploded"):
        trainer._check_exploded(torch.tensor(2.5e34), "s", _Ctx())


class _Ctx:
    epoch, step = 0, 0


def test_a_garbled_model_is_refused_by_every_command_that_loads_it(
    finished: Path, arrays_file: Path, tmp_path: Path, capsys
) -> None:
    garble_tensor_bytes(finished / "model.pt")
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.zeros((3, 5), np.float32))
    capsys.readouterr()
    for argv in (
        ["evaluate", str(finished)],
        ["predict", str(finished), str(inputs), "--out", str(tmp_path / "p.csv")],
        ["export", str(finished), "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        train_args(arrays_file, tmp_path / "dfr", "--method", "dfr", "--hp", f"base_run={finished}"),
    ):
        assert main(argv) == 2, argv
        err = one_line_error(capsys)
        assert "model.pt" in err and "corrupt" in err, err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.pt").exists()


def test_a_model_beside_another_runs_config_is_refused(
    finished: Path, arrays_file: Path, tmp_path: Path, capsys
) -> None:
    other = tmp_path / "other"
    assert main(train_args(arrays_file, other, "--seed", "1")) == 0
    (finished / "config.yaml").write_bytes((other / "config.yaml").read_bytes())  # one run's config, another's model
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) == 2
    assert "written by another run" in one_line_error(capsys)


@pytest.mark.parametrize("text", ["", "run: [unclosed", "- a list\n- not a mapping\n", "device: cpu\n"])
def test_an_empty_or_garbled_config_yaml_is_one_line_naming_it(finished: Path, text: str, capsys) -> None:
    (finished / "config.yaml").write_text(text)
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) == 2
    assert str(finished / "config.yaml") in one_line_error(capsys)


def test_a_truncated_config_yaml_that_still_parses_is_refused(finished: Path, capsys) -> None:
    config = finished / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(lines[: 2 * len(lines) // 3]))  # the run section intact, the rest cut off
    capsys.readouterr()
    assert main(["evaluate", str(finished)]) == 2
    err = one_line_error(capsys)
    assert str(config) in err and "changed after the run wrote it" in err


# ---------------------------------------------------------------------------------------------- one writer
def test_two_trains_on_one_out_one_is_refused(arrays_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shared"
    args = train_args(arrays_file, out)
    args[args.index("--epochs") + 1] = "5000"  # long enough to be running while the second one starts
    proc = cli_process(*args)
    try:
        wait_for(lambda: (out / LOCK).exists() and (out / "metrics.jsonl").exists(), "its first epoch", proc)
        before = (out / "config.yaml").read_bytes()
        for extra in ((), ("--overwrite",), ("--resume",), ("--seed", "7", "--overwrite")):
            capsys.readouterr()
            assert main(train_args(arrays_file, out, *extra)) == 2
            err = one_line_error(capsys)
            assert "in use by another process" in err and f"pid {proc.pid}" in err, err
        assert (out / "config.yaml").read_bytes() == before  # the second writer touched nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the lock died with its holder: the folder is usable at once
    assert main(train_args(arrays_file, out, "--overwrite")) == 0
    assert not (out / LOCK).exists()


def test_the_lock_is_free_within_one_process_and_refused_across(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    with run_dir_lock(folder), run_dir_lock(folder):  # nested (a bench worker, then its run): one holder
        assert (folder / LOCK).is_file()
        code = "\n".join(
            ["from pathlib import Path", "from debiaslab.run.directory import run_dir_lock",
             f"with run_dir_lock(Path({str(folder)!r})):", "    pass"]
        )  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode != 0 and "RunInUseError" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert not (folder / LOCK).exists()
    from debiaslab.run.directory import _acquire

    with run_dir_lock(folder), pytest.raises(RunInUseError):  # another open file of the lock: another holder
        _acquire(folder)


# ---------------------------------------------------------------------------------------------- workers
def test_a_killed_bench_leaves_no_worker_alive(tmp_path: Path) -> None:
    suite = tmp_path / "slow.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "slow",
                "imports": ["bench_plugin"],
                "epochs": 1,
                "datasets": [{"name": "toy_bench", "ratios": [0.1]}],
                "methods": [{"method": "bench_slow", "hparams": {"batch_size": 64}}],
            }
        )
    )
    out = tmp_path / "bench"
    proc = cli_process("bench", str(suite), "--out", str(out), "--workers", "1", "--no-progress",
                       env={"BENCH_SLOW_S": "300"})  # fmt: skip
    try:
        wait_for(lambda: any(out.rglob(".bench-running")), "a worker to start its run", proc)
        marker = next(out.rglob(".bench-running"))
        worker = int(marker.read_text())
        assert alive(worker)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(lambda: not alive(worker), "the worker to end with its parent", timeout=30)


def test_a_killed_tune_worker_leaves_the_search_to_finish_its_budget(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    out = tmp_path / "search"
    proc = cli_process(
        "-q", "tune", "--method", "bench_slow", "--dataset", "toy_bench", "--trials", "2", "--workers", "2",
        "--epochs-cap", "1", "--sampler", "random", "--pruner", "none", "--no-final", "--no-progress",
        "--hp", "batch_size=64", "--hp", "model_kwargs={width: 8, depth: 1}", "--out", str(out),
        "--imports", "bench_plugin",
        env={"BENCH_SLOW_S": "2"},
    )  # fmt: skip
    db = out / "study.db"
    victim: list[tuple[int, int]] = []

    def a_worker_runs_a_trial() -> bool:
        if not db.exists():
            return False
        try:
            with sqlite3.connect(db) as con:
                rows = con.execute(
                    "select t.number, a.value_json from trials t join trial_user_attributes a "
                    "on a.trial_id = t.trial_id where t.state = 'RUNNING' and a.key = 'worker'"
                ).fetchall()
        except sqlite3.Error:
            return False
        victim[:] = [(n, int(json.loads(v).rpartition(":")[2])) for n, v in rows]
        return bool(victim)

    try:
        wait_for(a_worker_runs_a_trial, "a worker to start a trial", proc)
        number, pid = victim[0]
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "/2 trials done" in stdout
    study = optuna.load_study(study_name="bench_slow-toy_bench", storage=f"sqlite:///{db}")
    states = {t.number: t.state for t in study.trials}
    assert states[number] == TrialState.FAIL and "killed" in study.trials[number].user_attrs
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states.values()) >= 2  # the budget is spent
    assert TrialState.RUNNING not in states.values()


def test_an_empty_or_garbled_study_db_is_one_line_and_never_a_new_study(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna")
    out = tmp_path / "search"
    argv = ["tune", "--method", "erm", "--dataset", "toy_bench", "--trials", "1", "--epochs-cap", "1",
            "--sampler", "random", "--pruner", "none", "--no-final", "--no-progress", "--hp", "batch_size=64",
            "--out", str(out)]  # fmt: skip
    import bench_plugin  # noqa: F401  (the toy_bench dataset)

    assert main(argv) == 0
    db = out / "study.db"
    db.write_bytes(b"")
    capsys.readouterr()
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert str(db) in err and "trial folder" in err
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["trial0000"]  # nothing trained over it

    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    assert main(argv) == 2
    assert str(db) in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------- --overwrite
def test_a_kill_while_moving_aside_then_a_failing_overwrite_loses_nothing(
    finished: Path, arrays_file: Path, monkeypatch
) -> None:
    before = tree(finished)
    real_rename = Path.rename
    moved: list[Path] = []

    def killed_after_two(self: Path, target):
        if PENDING in str(target) and len(moved) == 2:
            raise Killed
        moved.append(self)
        return real_rename(self, target)

    with monkeypatch.context() as m:
        m.setattr(Path, "rename", killed_after_two)
        with pytest.raises(Killed):
            main(train_args(arrays_file, finished, "--overwrite"))
    assert (finished / PENDING).is_dir() and not (finished / "final.json").exists()  # what the kill left

    def crash(*args, **kwargs):
        raise Boom("before the first epoch")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_stage", crash)
        with pytest.raises(Boom):
            main(train_args(arrays_file, finished, "--overwrite", "--seed", "4"))
    assert tree(finished) == before
    assert not any((finished / d).exists() for d in (PENDING, PREVIOUS, RESTORING))


def test_a_kill_while_putting_the_old_run_back_is_completed_later(
    finished: Path, arrays_file: Path, monkeypatch, capsys
) -> None:
    before = tree(finished)
    real_rename = Path.rename

    def killed_in_restore(self: Path, target):
        if RESTORING in str(self) and Path(self).parent.name == RESTORING:
            raise Killed
        return real_rename(self, target)

    def crash(*args, **kwargs):
        raise Boom("before the first epoch")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_stage", crash)
        m.setattr(Path, "rename", killed_in_restore)
        with pytest.raises(Killed):
            main(train_args(arrays_file, finished, "--overwrite"))
    assert (finished / RESTORING).is_dir() and not (finished / "final.json").exists()
    capsys.readouterr()
    assert main(train_args(arrays_file, finished)) == 2  # the next command completes the restore, then refuses
    assert "--overwrite" in one_line_error(capsys)
    assert tree(finished) == before


def test_leftover_temp_files_of_killed_writes_are_removed(finished: Path, arrays_file: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [
        finished / f".final.json.{_host()}-{dead.pid}.abcd1234.tmp",
        finished / "checkpoints" / f".erm.last.pt.{_host()}-{dead.pid}.abcd1234.tmp",
    ]
    live = finished / f".report.md.{_host()}-{os.getpid()}.abcd1234.tmp"  # being written by a live process
    for path in (*stale, live):
        path.write_text("half")
    recover_run_dir(finished)
    assert not any(p.exists() for p in stale) and live.exists()


# ---------------------------------------------------------------------------------------------- checks first
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--hp", "grad_clip=-1"], "grad_clip -1.0 must be a finite number > 0"),
        (["--lr", "-0.1"], "lr -0.1 must be a finite number > 0"),
        (["--epochs", "100000000"], "epochs 100000000 must be at most"),
    ],
)
def test_values_that_cannot_train_are_refused_before_training(
    extra: list[str], expected: str, arrays_file: Path, tmp_path: Path, capsys
) -> None:
    assert main(train_args(arrays_file, tmp_path / "r", *extra)) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_an_output_that_is_a_file_of_the_run_is_refused(finished: Path, tmp_path: Path, capsys) -> None:
    before = tree(finished)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.zeros((3, 5), np.float32))
    for argv in (
        ["predict", str(finished), str(inputs), "--out", str(finished / "final.json")],
        ["predict", str(finished), str(inputs), "--out", str(finished / "checkpoints" / "p.csv")],
        ["export", str(finished), "--format", "torchscript", "--out", str(finished / "model.pt")],
        ["export", str(finished), "--format", "torchscript", "--out", str(finished / "." / "config.yaml")],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "would overwrite" in one_line_error(capsys)
    assert tree(finished) == before


def test_tune_refuses_what_would_fail_after_the_search(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("optuna")
    import bench_plugin  # noqa: F401
    from debiaslab.tune.suite import parse_tune_suite

    base = ["tune", "--method", "erm", "--dataset", "toy_bench", "--trials", "1", "--epochs-cap", "1", "--no-progress"]
    out = tmp_path / "s"
    assert main([*base, "--out", str(out), "--final-ratios", "7"]) == 2
    assert "--final-ratios 7 is outside (0, 1)" in one_line_error(capsys)
    assert not out.exists()  # refused before any trial
    monkeypatch.chdir(tmp_path)
    for study in ("../escape", "/tmp/escape", "a/b"):
        assert main([*base, "--study", study]) == 2
        assert "study name" in one_line_error(capsys)
    assert not (tmp_path.parent / "escape").exists()
    doc = {"dataset": {"name": "toy_bench"}, "methods": [{"method": "erm", "label": "../../outside"}]}
    with pytest.raises(ConfigError, match=r"methods\[0\]\.label"):
        parse_tune_suite(doc, "t.yaml")
    with pytest.raises(ConfigError, match="'name'"):
        parse_tune_suite({**doc, "name": "/abs", "methods": ["erm"]}, "t.yaml")


# ---------------------------------------------------------------------------------------------- full disks
def test_a_full_disk_is_one_line_and_the_finished_run_is_kept(
    finished: Path, arrays_file: Path, monkeypatch, capsys
) -> None:
    before = tree(finished)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        assert main(train_args(arrays_file, finished, "--overwrite", "--seed", "2")) == 2
    err = one_line_error(capsys)
    assert "no space left" in err and "nothing finished was lost" in err and str(finished) in err
    assert tree(finished) == before
    assert not list(finished.rglob("*.tmp"))


def test_a_full_disk_during_a_torchscript_export_is_one_line(finished: Path, tmp_path: Path, monkeypatch, capsys):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    assert main(["export", str(finished), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "could not write" in one_line_error(capsys)
    assert not list(tmp_path.glob(".m.pt*"))


def test_a_full_disk_is_recognised_behind_torch_errors(tmp_path: Path) -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 704 vs 598") from None
    except RuntimeError as exc:
        assert is_disk_full(exc)
    assert not is_disk_full(RuntimeError("size mismatch"))

    def over_quota(fh):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    atomic_write_text(tmp_path / "x.txt", "the previous version")
    with pytest.raises(DiskFullError, match="could not write"):
        atomic_write(tmp_path / "x.txt", over_quota)
    assert (tmp_path / "x.txt").read_text() == "the previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_an_mlflow_password_is_masked_and_a_dead_server_fails_at_once() -> None:
    pytest.importorskip("mlflow")
    from debiaslab.engine.tracking import MLflowTracker

    with pytest.raises(ConfigError) as info:
        MLflowTracker("http://alice:s3cret@127.0.0.1:9", experiment="e", run_name="r")
    assert "s3cret" not in str(info.value) and "alice:***@127.0.0.1" in str(info.value)
