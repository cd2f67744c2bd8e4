"""Fault probe: kill processes, corrupt files, fill the disk and give bad inputs, and count what each did.

    python benchmarks/fault_probe.py --work /tmp/probe --json benchmarks/results-fault-probe.json

Every case runs the command line (``debiaslab.cli.main`` in this process, or ``python -m debiaslab`` in a
subprocess where a process is killed) on a tiny ``arrays`` dataset with one torch thread, and is classed:

- process faults (a SIGKILL, or a kill simulated at one exact instant of a file operation): ``survived`` (the
  result equals an uninterrupted run's, or the old run is whole), ``handled_badly`` (nothing lost, but an error or
  a stuck state), ``lost_or_mixed`` (files lost, or one run's files beside another's);
- corruptions (zero bytes, truncation, random bytes over a tensor or the pickled structure, garbage, another
  run's file): ``caught`` (one ``error:`` line, nothing used), ``traceback``, ``unnoticed`` (exit 0);
- full disk (a 4 MiB tmpfs filled up, when run as root; else ENOSPC raised by a patched ``os.fsync``): ``clear``
  (one line saying no space is left) and ``nothing_lost`` (what was there before is intact);
- bad inputs (each passes argparse): ``one_line`` or not.

The JSON holds the counts and every case with its outcome and the line the user saw. Takes 1-5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from debiaslab.cli.main import main
from debiaslab.engine.progress import ProgressReporter
from debiaslab.engine.trainer import Trainer
from debiaslab.run.directory import LOCK, PENDING, PREVIOUS, RESTORING

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
TINY = ["--hp", "model_kwargs={width: 8, depth: 1}", "--batch-size", "16", "--no-progress", "--threads", "1"]
SRC = Path(__file__).resolve().parents[1] / "src"


class Killed(BaseException):
    """A kill at one exact instant, in this process: nothing catches it and nothing after it runs."""


class Probe:
    """The cases and their outcomes, by group."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.groups: dict[str, list[dict[str, Any]]] = {}
        self.n = 0

    def record(self, group: str, name: str, outcome: str, seen: str = "", **extra: Any) -> None:
        seen = seen.replace(str(self.work), "<work>")  # the scratch folder, named the same on every machine
        self.groups.setdefault(group, []).append({"case": name, "outcome": outcome, "seen": seen[:400], **extra})
        print(f"[{group}] {name}: {outcome}  {seen[:160]}", file=sys.__stderr__, flush=True)

    def fresh(self, name: str) -> Path:
        self.n += 1
        path = self.work / f"c{self.n:03d}-{re.sub(r'[^A-Za-z0-9]+', '-', name)[:40]}"
        path.mkdir(parents=True)
        return path

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group, cases in self.groups.items():
            counts: dict[str, int] = {}
            for case in cases:
                counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
            out[group] = {"tried": len(cases), "counts": counts, "cases": cases}
        return out


# ---------------------------------------------------------------------------------------------- helpers
def cli(argv: list[str]) -> dict[str, Any]:
    """Run the command line here: ``kind`` is ``exit0``, ``one_line`` (non-zero exit, one non-log line on stderr,
    no traceback), ``messy`` (several lines) or ``traceback`` (an exception left ``main``)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except Killed:
            raise
        except BaseException as exc:  # what the user would have seen as a traceback
            return {"kind": "traceback", "code": None, "line": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip() and not LOG_LINE.match(line)]
    if code == 0:
        kind = "exit0"
    elif len(lines) == 1 and "Traceback" not in text:
        kind = "one_line"
    else:
        kind = "messy"
    return {"kind": kind, "code": code, "line": lines[-1] if lines else ""}


def train_args(data: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={data}", "--epochs",
            str(epochs), "--out", str(out), *TINY, *extra]  # fmt: skip


def arrays(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    attr = (np.arange(n) // 4) % 2
    x = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    split = rng.permutation(np.array(["train", "train", "val", "test"] * (n // 4)))
    np.savez(path, x=x, y=y, attr=attr, split=split)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != LOCK}


def results(run: Path) -> Any:
    """What a run concluded (metrics, selection), without times."""
    final = json.loads((run / "final.json").read_text())
    return [final["metrics"], final["selected"], final["selections"]]


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@contextlib.contextmanager
def crash_in_epoch(epoch: int) -> Iterator[None]:
    original = ProgressReporter.epoch_done

    def crash(self: Any, stage: str, e: int, *args: Any, **kwargs: Any) -> None:
        if e == epoch:
            raise RuntimeError(f"crash in epoch {epoch}")
        return original(self, stage, e, *args, **kwargs)

    with patched(ProgressReporter, "epoch_done", crash):
        yield


def subprocess_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "debiaslab", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate()


def metrics_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def running_workers(db: Path) -> list[tuple[int, int]]:
    """``(trial number, worker pid)`` of the trials running in an Optuna SQLite file."""
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "select t.number, a.value_json from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
                "where t.state = 'RUNNING' and a.key = 'worker'"
            ).fetchall()
    except sqlite3.Error:
        return []
    return [(n, int(json.loads(v).rpartition(":")[2])) for n, v in rows]


def trial_states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select state, count(*) from trials group by state").fetchall())


# ---------------------------------------------------------------------------------------------- corruptions
def zero(path: Path, other: Path | None = None) -> None:
    path.write_bytes(b"")


def truncate(path: Path, other: Path | None = None) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path, other: Path | None = None) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def _record(path: Path, pick: Callable[[zipfile.ZipInfo], bool]) -> tuple[int, int]:
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if pick(i)), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def tensor_bytes(path: Path, other: Path | None = None) -> None:
    """64 random bytes over the largest tensor of a ``torch.save`` file."""
    start, size = _record(path, lambda i: "/data/" in i.filename)
    raw = bytearray(path.read_bytes())
    n = min(64, size)
    raw[start : start + n] = np.random.default_rng(2).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def pickle_bytes(path: Path, other: Path | None = None) -> None:
    """16 random bytes in the middle of a ``torch.save`` file's pickled structure (``data.pkl``)."""
    start, size = _record(path, lambda i: i.filename.endswith("data.pkl"))
    raw = bytearray(path.read_bytes())
    at = start + size // 2
    raw[at : at + 16] = np.random.default_rng(3).integers(0, 256, 16, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def another_runs(path: Path, other: Path | None = None) -> None:
    assert other is not None
    shutil.copyfile(other, path)


def not_a_mapping(path: Path, other: Path | None = None) -> None:
    path.write_text("- a list\n- not the mapping of a run\n")


def no_run_section(path: Path, other: Path | None = None) -> None:
    doc = yaml.safe_load(path.read_text())
    doc.pop("run")
    path.write_text(yaml.safe_dump(doc))


def corruptions(p: Probe, small: Path) -> None:
    base = p.fresh("pristine")
    fin, fin1, part, part1 = base / "fin", base / "fin1", base / "part", base / "part1"
    rules = ["--hp", "report_rules=[val_accuracy]"]
    assert cli(train_args(small, fin))["kind"] == "exit0"
    assert cli(train_args(small, fin1, "--seed", "1"))["kind"] == "exit0"
    for run, seed in ((part, "0"), (part1, "1")):
        with crash_in_epoch(3):
            cli(train_args(small, run, "--seed", seed, *rules, epochs=4))
    inputs = base / "x.npz"
    np.savez(inputs, x=np.zeros((3, 5), np.float32))

    def on_finished(what: str, corrupt: Callable[..., None], other: str | None, commands: dict[str, Callable]) -> None:
        for command, argv in commands.items():
            case = p.fresh(f"{what}-{corrupt.__name__}-{command}")
            run = case / "run"
            shutil.copytree(fin, run)
            corrupt(run / what, fin1 / other if other else None)
            seen = cli(argv(run, case))
            outcome = {"one_line": "caught", "exit0": "unnoticed"}.get(seen["kind"], "traceback")
            p.record("corruptions", f"{what} {corrupt.__name__} -> {command}", outcome, seen["line"])

    model_commands = {
        "evaluate": lambda run, case: ["evaluate", str(run)],
        "predict": lambda run, case: ["predict", str(run), str(inputs), "--out", str(case / "p.csv")],
        "export": lambda run, case: ["export", str(run), "--format", "torchscript", "--out", str(case / "m.pt")],
        "dfr base_run": lambda run, case: [
            *train_args(small, case / "dfr", "--method", "dfr", "--hp", f"base_run={run}")
        ],
    }
    for corrupt in (zero, truncate, tensor_bytes, pickle_bytes, another_runs):
        on_finished("model.pt", corrupt, "model.pt", model_commands)
    config_commands = {k: model_commands[k] for k in ("evaluate", "predict")}
    for corrupt in (zero, truncate, garbage, not_a_mapping, no_run_section, another_runs):
        on_finished("config.yaml", corrupt, "config.yaml", config_commands)

    checkpoint = "checkpoints/erm.{}.pt"
    cases = [(checkpoint.format("last"), c) for c in (zero, truncate, tensor_bytes, pickle_bytes, another_runs)]
    cases += [(checkpoint.format("best"), tensor_bytes), (checkpoint.format("rules"), tensor_bytes)]
    cases += [("config.yaml", zero), ("config.yaml", garbage)]
    for what, corrupt in cases:
        case = p.fresh(f"{what}-{corrupt.__name__}")
        run = case / "run"
        shutil.copytree(part, run)
        corrupt(run / what, part1 / what)
        seen = cli(train_args(small, run, "--resume", *rules, epochs=4))
        outcome = {"one_line": "caught", "exit0": "unnoticed"}.get(seen["kind"], "traceback")
        p.record("corruptions", f"{what} {corrupt.__name__} -> train --resume", outcome, seen["line"])

    search = base / "search"
    tune = ["tune", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={small}", "--epochs-cap", "1",
            "--sampler", "random", "--pruner", "none", "--no-final", "--no-progress", *TINY[:2], "--hp",
            "batch_size=16", "--out"]  # fmt: skip
    assert cli([*tune, str(search), "--trials", "2"])["kind"] == "exit0"
    for what, corrupt in (("study.db", zero), ("study.db", truncate), ("study.db", garbage), ("search.yaml", zero),
                          ("search.yaml", garbage)):  # fmt: skip
        case = p.fresh(f"{what}-{corrupt.__name__}")
        shutil.copytree(search, case / "s")
        corrupt(case / "s" / what)
        seen = cli([*tune, str(case / "s"), "--trials", "3"])
        outcome = {"one_line": "caught", "exit0": "unnoticed"}.get(seen["kind"], "traceback")
        p.record("corruptions", f"{what} {corrupt.__name__} -> tune (resume)", outcome, seen["line"])


# ---------------------------------------------------------------------------------------------- process faults
def process_faults(p: Probe, small: Path, big: Path) -> None:
    ref_dir = p.fresh("reference")
    ref_small = ref_dir / "small"
    assert cli(train_args(small, ref_small, epochs=3))["kind"] == "exit0"
    ref_big = ref_dir / "big"
    assert cli(train_args(big, ref_big, epochs=3))["kind"] == "exit0"

    for after in (1, 2):  # SIGKILL a training after epoch k, then --resume
        run = p.fresh(f"kill-after-epoch-{after}") / "run"
        proc = subprocess_cli(*train_args(big, run, epochs=3))
        reached = wait_for(lambda r=run, k=after: metrics_lines(r) >= k, proc)
        kill(proc)
        seen = cli(train_args(big, run, "--resume", epochs=3))
        if not reached:
            outcome = "not_reached"
        elif seen["kind"] == "exit0" and results(run) == results(ref_big):
            outcome = "survived"
        else:
            outcome = "lost_or_mixed" if seen["kind"] == "exit0" else "handled_badly"
        p.record("process_faults", f"train SIGKILLed after epoch {after}, then --resume", outcome, seen["line"])

    # a kill in the middle of writing a checkpoint
    run = p.fresh("kill-in-checkpoint-write") / "run"
    real_save = torch.save
    calls = [0]

    def half_then_killed(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 6:  # epoch 2's last checkpoint
            f.write(b"PK\x03\x04 half a checkpoint")
            raise Killed
        real_save(obj, f, *args, **kwargs)

    with contextlib.suppress(Killed), patched(torch, "save", half_then_killed):
        cli(train_args(small, run, epochs=3))
    seen = cli(train_args(small, run, "--resume", epochs=3))
    same = seen["kind"] == "exit0" and results(run) == results(ref_small) and not list(run.rglob("*.tmp"))
    outcome = "survived" if same else ("lost_or_mixed" if seen["kind"] == "exit0" else "handled_badly")
    p.record("process_faults", "kill while a checkpoint is half written, then --resume", outcome, seen["line"])

    overwrite_kills(p, small)
    concurrent_writers(p, big)
    killed_bench(p, big)
    killed_tune(p, big)


def overwrite_kills(p: Probe, small: Path) -> None:
    """``--overwrite`` killed before each rename of moving the old run aside (then a failing overwrite), before
    each rename of putting it back, and while deleting it after the new run finished."""
    pristine = p.fresh("overwrite-pristine") / "run"
    assert cli(train_args(small, pristine))["kind"] == "exit0"
    before = tree(pristine)
    real_rename = Path.rename

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the new run fails before its first epoch")

    for phase in ("move aside", "put back"):
        for instant in range(8):
            run = p.fresh(f"overwrite-{phase}-{instant}") / "run"
            shutil.copytree(pristine, run)
            count = [0]

            def killing(self: Path, target: Any, i: int = instant, ph: str = phase, count: list = count) -> Any:
                inside = (PENDING in str(target) or str(target).endswith(PREVIOUS)) if ph == "move aside" else (
                    RESTORING in str(self) or str(target).endswith(RESTORING))  # fmt: skip
                if inside:
                    if count[0] == i:
                        raise Killed
                    count[0] += 1
                return real_rename(self, target)

            with contextlib.suppress(Killed), patched(Path, "rename", killing), patched(Trainer, "run_stage", crash):
                cli(train_args(small, run, "--overwrite"))
            killed = count[0] == instant
            with patched(Trainer, "run_stage", crash):  # the next command: an overwrite that fails early
                seen = cli(train_args(small, run, "--overwrite", "--seed", "3"))
            intact = tree(run) == before and not any((run / d).exists() for d in (PENDING, PREVIOUS, RESTORING))
            outcome = "not_reached" if not killed else ("survived" if intact else "lost_or_mixed")
            p.record("process_faults", f"--overwrite killed at rename {instant} of '{phase}', then a failing "
                     "--overwrite", outcome, seen["line"])  # fmt: skip

    run = p.fresh("overwrite-delete") / "run"
    shutil.copytree(pristine, run)
    real_rmtree = shutil.rmtree

    def killed_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(PREVIOUS):
            for item in sorted(Path(path).iterdir())[:3]:
                real_rmtree(item) if item.is_dir() else item.unlink()
            raise Killed
        real_rmtree(path, *args, **kwargs)

    with contextlib.suppress(Killed), patched(shutil, "rmtree", killed_rmtree):
        cli(train_args(small, run, "--overwrite", "--seed", "5"))
    seen = cli(train_args(small, run))
    new = json.loads((run / "final.json").read_text()).get("seed") if (run / "final.json").is_file() else None
    ok = new == 5 and not (run / PREVIOUS).exists() and seen["kind"] == "one_line"
    p.record("process_faults", "killed while deleting the replaced run after the new one finished",
             "survived" if ok else "lost_or_mixed", seen["line"])  # fmt: skip


def concurrent_writers(p: Probe, big: Path) -> None:
    run = p.fresh("two-writers") / "run"
    proc = subprocess_cli(*train_args(big, run, epochs=200))
    started = wait_for(lambda: metrics_lines(run) >= 1, proc)
    config = (run / "config.yaml").read_bytes() if started else b""
    seen = cli(train_args(big, run, "--overwrite", "--seed", "9", epochs=1))
    kill(proc)
    ok = started and seen["kind"] == "one_line" and (run / "config.yaml").read_bytes() == config
    outcome = "not_reached" if not started else ("survived" if ok else "lost_or_mixed")
    p.record(
        "process_faults", "a second train --overwrite on the --out another train is writing", outcome, seen["line"]
    )


def killed_bench(p: Probe, big: Path) -> None:
    case = p.fresh("bench-killed")
    suite = case / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "probe", "epochs": 200,
        "datasets": [{"name": "arrays", "options": {"path": str(big)}, "dir": "arrays"}],
        "methods": [{"method": "erm", "hparams": {"model_kwargs": {"width": 8, "depth": 1}, "batch_size": 16}}],
    }))  # fmt: skip
    out = case / "bench"
    proc = subprocess_cli("bench", str(suite), "--out", str(out), "--workers", "1", "--no-progress")
    started = wait_for(lambda: any(out.rglob(".bench-running")) and metrics_lines(next(out.rglob("seed0"))) >= 1, proc)
    worker = int(next(out.rglob(".bench-running")).read_text()) if started else -1
    kill(proc)
    gone = started and wait_for(lambda: not alive(worker), timeout=30)
    outcome = "not_reached" if not started else ("survived" if gone else "handled_badly")
    p.record("process_faults", "bench SIGKILLed while its worker trains: the worker ends too", outcome,
             f"worker {worker} {'ended' if gone else 'still running'}")  # fmt: skip
    if not gone and worker > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def killed_tune(p: Probe, big: Path) -> None:
    tune = ["tune", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={big}", "--epochs-cap", "1",
            "--trials", "3", "--workers", "2", "--sampler", "random", "--pruner", "none", "--no-final",
            "--no-progress", *TINY[:2], "--hp", "batch_size=16", "--out"]  # fmt: skip
    for what in ("the tune command", "one tune worker"):
        out = p.fresh(f"tune-{what}") / "search"
        proc = subprocess_cli(*tune, str(out))
        db = out / "study.db"
        started = wait_for(lambda db=db: bool(running_workers(db)), proc)
        workers = [pid for _, pid in running_workers(db)]
        if what == "the tune command":
            kill(proc)
            gone = wait_for(lambda pids=workers: not any(alive(w) for w in pids), timeout=30)
            again = cli([*tune, str(out)])
            states = trial_states(db)
            ok = gone and again["kind"] == "exit0" and states.get("COMPLETE", 0) >= 3 and "RUNNING" not in states
            seen = {"line": f"workers ended: {gone}; the same command again: {again['kind']}"}
        else:
            if started:
                os.kill(workers[0], signal.SIGKILL)
            _, stderr = proc.communicate(timeout=600)
            states = trial_states(db)
            seen = {"line": f"exit {proc.returncode}{'; a traceback' if 'Traceback' in stderr else ''}"}
            ok = proc.returncode == 0 and states.get("COMPLETE", 0) >= 3 and "RUNNING" not in states
        outcome = "not_reached" if not started else ("survived" if ok else "handled_badly")
        p.record("process_faults", f"SIGKILL {what} during a 2-worker search of 3 trials", outcome,
                 f"{seen['line']}; trial states {states}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- full disk
@contextlib.contextmanager
def full_disk(p: Probe) -> Iterator[tuple[Path, str]]:
    """A folder on a nearly full 4 MiB tmpfs (root), else a folder whose writes fail in ``os.fsync``."""
    folder = p.fresh("full-disk") / "mnt"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield folder, "tmpfs" if mounted else "fsync"
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Use up the free space of ``folder``'s file system (a tmpfs)."""
    with contextlib.suppress(OSError), open(folder / "filler", "ab", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 4096)


def no_space_fsync(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def disk_full(p: Probe, small: Path) -> str:
    pristine = p.fresh("disk-pristine") / "run"
    assert cli(train_args(small, pristine))["kind"] == "exit0"
    part = p.fresh("disk-partial") / "run"
    with crash_in_epoch(2):
        cli(train_args(small, part, epochs=3))
    inputs = pristine.parent / "x.npz"
    np.savez(inputs, x=np.zeros((3, 5), np.float32))
    tune = ["tune", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={small}", "--epochs-cap", "1",
            "--trials", "1", "--sampler", "random", "--pruner", "none", "--no-final", "--no-progress",
            "--hp", "batch_size=16", "--out"]  # fmt: skip
    suite = pristine.parent / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "probe", "epochs": 1,
        "datasets": [{"name": "arrays", "options": {"path": str(small)}, "dir": "arrays"}],
        "methods": [{"method": "erm", "hparams": {"model_kwargs": {"width": 8, "depth": 1}, "batch_size": 16}}],
    }))  # fmt: skip
    cases: list[tuple[str, Callable[[Path], Path | None], Callable[[Path], list[str]]]] = [
        ("train a new run", lambda d: None, lambda d: train_args(small, d / "new")),
        ("train --overwrite a finished run", lambda d: _copy(pristine, d / "run"),
         lambda d: train_args(small, d / "run", "--overwrite", "--seed", "1")),
        ("train --resume a partial run", lambda d: _copy(part, d / "run"),
         lambda d: train_args(small, d / "run", "--resume", epochs=3)),
        ("predict over an earlier predictions file", lambda d: _copy(pristine, d / "run"),
         lambda d: ["predict", str(d / "run"), str(inputs)]),
        ("export torchscript", lambda d: _copy(pristine, d / "run"),
         lambda d: ["export", str(d / "run"), "--format", "torchscript"]),
        ("export onnx", lambda d: _copy(pristine, d / "run"), lambda d: ["export", str(d / "run"), "--format", "onnx"]),
        ("tune a new search", lambda d: None, lambda d: [*tune, str(d / "search")]),
        ("bench a suite", lambda d: None, lambda d: ["bench", str(suite), "--out", str(d / "bench"), "--workers", "1",
                                                     "--no-progress"]),
    ]  # fmt: skip
    used = "?"
    for name, prepare, argv in cases:
        with full_disk(p) as (folder, mode):
            used = mode
            kept = prepare(folder)
            if kept is not None and name.startswith("predict"):
                assert cli(["predict", str(kept), str(inputs)])["kind"] == "exit0"
            before = tree(kept) if kept is not None else {}
            if mode == "tmpfs":
                fill(folder)
                seen = cli(argv(folder))
                (folder / "filler").unlink()
            else:
                with patched(os, "fsync", no_space_fsync):
                    seen = cli(argv(folder))
            after = tree(kept) if kept is not None else {}
            lost = {k for k in before if before[k] != after.get(k)}
            clear = seen["kind"] == "one_line" and "no space left" in seen["line"]
            leftovers = [str(x.relative_to(folder)) for x in folder.rglob("*.tmp")]
            outcome = ("clear" if clear else "unclear") + ("+nothing_lost" if not lost else "+lost")
            p.record("disk_full", name, outcome, seen["line"], lost=sorted(lost), temp_files_left=leftovers)
    return used


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------- bad inputs
def bad_inputs(p: Probe, small: Path) -> None:
    case = p.fresh("bad-inputs")
    run = case / "run"
    assert cli(train_args(small, run))["kind"] == "exit0"
    text = case / "notes.txt"
    text.write_text("not data")
    no_y = case / "no_y.npz"
    np.savez(no_y, x=np.zeros((8, 5), np.float32))
    obj = case / "objects.npz"
    np.savez(obj, x=np.array([{"a": 1}] * 3, dtype=object))
    wrong = case / "wrong_shape.npz"
    np.savez(wrong, x=np.zeros((3, 7), np.float32))
    empty = case / "empty_folder"
    empty.mkdir()
    csv = case / "texts.csv"
    csv.write_text("text\nhello\n")
    garbled = case / "garbled.yaml"
    garbled.write_text("method: [unclosed\n")
    unknown_key = case / "unknown_key.yaml"
    unknown_key.write_text("run:\n  method: erm\n  dataset: arrays\n  colour: red\n")
    space_bad = case / "space.yaml"
    space_bad.write_text("lr: loguniform(1, 0)\n")
    suite_up = case / "suite_up.yaml"
    suite_up.write_text(yaml.safe_dump({"datasets": [{"name": "arrays", "options": {"path": str(small)}}],
                                        "methods": [{"method": "erm", "label": "../up"}]}))  # fmt: skip
    tsuite_up = case / "tsuite_up.yaml"
    tsuite_up.write_text(yaml.safe_dump({"dataset": {"name": "arrays", "options": {"path": str(small)}},
                                         "methods": [{"method": "erm", "label": "../../up"}]}))  # fmt: skip
    a_file = case / "a_file"
    a_file.write_text("x")
    t = ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={small}", "--epochs", "1",
         "--no-progress", "--out", str(case / "t")]  # fmt: skip
    tn = ["tune", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={small}", "--trials", "1",
          "--epochs-cap", "1", "--no-progress", "--out", str(case / "tn")]  # fmt: skip
    r = str(run)
    inputs: dict[str, list[str]] = {
        "unknown method": ["train", "--method", "nope", "--dataset", "arrays"],
        "unknown dataset": ["train", "--method", "erm", "--dataset", "nope"],
        "unknown hyperparameter": [*t, "--hp", "colour=red"],
        "text for a float": [*t, "--hp", "lr=fast"],
        "epochs 0": [*t, "--epochs", "0"],
        "epochs 10^9": [*t, "--epochs", "1000000000"],
        "negative lr": [*t, "--lr", "-1"],
        "nan lr": [*t, "--lr", "nan"],
        "grad_clip -1": [*t, "--hp", "grad_clip=-1"],
        "batch size 0": [*t, "--batch-size", "0"],
        "weight decay -1": [*t, "--hp", "weight_decay=-1"],
        "unknown model": [*t, "--hp", "model=nope"],
        "model_kwargs not a mapping": [*t, "--hp", "model_kwargs=3"],
        "unknown selection rule": [*t, "--selection", "best"],
        "unknown dataset option": [*t, "--data-opt", "colour=red"],
        "missing data file": ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", "path=/no/such.npz"],
        "data file that is text": ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={text}"],
        "data file without y": ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={no_y}"],
        "unknown device": [*t, "--device", "tpu9"],
        "cuda without a GPU": [*t, "--device", "cuda:7"],
        "--threads 0": [*t, "--threads", "0"],
        "--out is a file": [*t[:-1], str(a_file)],
        "--out unwritable": [*t[:-1], "/proc/debiaslab-run"],
        "--config missing": ["train", "--config", str(case / "nope.yaml")],
        "--config garbled": ["train", "--config", str(garbled)],
        "--config unknown key": ["train", "--config", str(unknown_key)],
        "dfr base_run missing": [*t, "--method", "dfr", "--hp", "base_run=/no/such/run"],
        "dett teacher_run missing": [*t, "--method", "dett", "--hp", "teacher_run=/no/such/run"],
        "finished run without --overwrite": train_args(small, run),
        "mlflow server down (password in URI)": [*t, "--mlflow", "http://user:secret@127.0.0.1:9"],
        "evaluate a missing folder": ["evaluate", str(case / "nope")],
        "evaluate an unfinished folder": ["evaluate", str(case)],
        "evaluate on an unknown dataset": ["evaluate", r, "--dataset", "nope"],
        "evaluate with an option the dataset lacks": ["evaluate", r, "--ratio", "0.5"],
        "predict a missing input": ["predict", r, str(case / "nope.npz")],
        "predict a .txt": ["predict", r, str(text)],
        "predict an npz without x": ["predict", r, str(case / "x_missing.npz")],
        "predict pickled objects": ["predict", r, str(obj)],
        "predict the wrong shape": ["predict", r, str(wrong)],
        "predict an empty folder": ["predict", r, str(empty)],
        "predict a CSV of texts with an array model": ["predict", r, str(csv)],
        "predict --out RUN/final.json": ["predict", r, str(wrong), "--out", f"{r}/final.json"],
        "export --out RUN/model.pt": ["export", r, "--format", "torchscript", "--out", f"{r}/model.pt"],
        "export a missing run": ["export", str(case / "nope"), "--format", "onnx"],
        "bench an unknown suite": ["bench", "nope"],
        "bench a missing suite file": ["bench", str(case / "nope.yaml")],
        "bench a garbled suite": ["bench", str(garbled)],
        "bench a label with ..": ["bench", str(suite_up), "--out", str(case / "b")],
        "bench --workers 0": ["bench", "quick", "--workers", "0", "--out", str(case / "b")],
        "bench --only an unknown method": ["bench", "quick", "--only", "nope", "--out", str(case / "b")],
        "tune --final-ratios 7": [*tn, "--final-ratios", "7"],
        "tune --study ..": [*tn[:-2], "--study", "../../up"],
        "tune --study absolute": [*tn[:-2], "--study", "/tmp/up"],
        "tune --trials 0": [*tn, "--trials", "0"],
        "tune --seeds -1": [*tn, "--seeds", "-1"],
        "tune unknown rule": [*tn, "--rule", "val_best"],
        "tune --space missing": [*tn, "--space", str(case / "nope.yaml")],
        "tune --space bad range": [*tn, "--space", str(space_bad)],
        "tune --hp grad_clip -1": [*tn, "--hp", "grad_clip=-1"],
        "tune storage down (password in URL)": [*tn, "--storage", "postgresql://u:secret@127.0.0.1:1/db"],
        "tune suite label with ..": ["tune", "--suite", str(tsuite_up), "--out", str(case / "ts")],
        "tune an unknown suite": ["tune", "--suite", "nope"],
    }
    np.savez(case / "x_missing.npz", y=np.zeros(3))
    for name, argv in inputs.items():
        seen = cli(argv)
        ok = seen["kind"] == "one_line" and "secret" not in seen["line"]
        p.record("bad_inputs", name, "one_line" if ok else seen["kind"], seen["line"])


# ---------------------------------------------------------------------------------------------- main
GROUPS = ("corruptions", "process_faults", "disk_full", "bad_inputs")


def run_probe(work: Path, only: list[str] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    p = Probe(work)
    small = arrays(work / "small.npz", 96)
    big = arrays(work / "big.npz", 12000)
    started = time.perf_counter()
    mode = "not run"
    wanted = set(only or GROUPS)
    if "corruptions" in wanted:
        corruptions(p, small)
    if "process_faults" in wanted:
        process_faults(p, small, big)
    if "disk_full" in wanted:
        mode = disk_full(p, small)
    if "bad_inputs" in wanted:
        bad_inputs(p, small)
    return {
        "what": "debiaslab fault probe (benchmarks/fault_probe.py)",
        "disk_full_mode": mode,
        "wall_s": round(time.perf_counter() - started, 1),
        **p.summary(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/fault-probe"), help="scratch folder (emptied)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-fault-probe.json"))
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="only these groups (default: all)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    summary = run_probe(args.work, args.only)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    for group in GROUPS:
        if group in summary:
            print(f"{group}: {summary[group]['tried']} tried, {summary[group]['counts']}")
