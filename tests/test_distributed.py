"""One run on two processes (gloo on CPU) takes the same steps as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from debiaslab.engine import data_parallel
from debiaslab.engine.stage import Stage
from debiaslab.errors import ConfigError
from toys import tiny_mlp, toy_splits

#: methods compared: ERM (DDP), LfF (two models and per-example loss averages under DDP), BAM (a per-example
#: parameter table under DDP), GroupDRO (group means of the global batch), ULE (input gradients: the coalesced
#: all-reduce)
METHODS = {
    "erm": {},
    "groupdro": {},
    "lff": {},
    "bam": {"amplify_epochs": 1},
    "ule": {},
}
#: two processes add the two halves of each global batch in another order than one process does; over a few
#: epochs of a small MLP that moves weights by ~1e-6 and validation accuracies by at most one example
WEIGHT_ATOL = 1e-4


def _fit_all(out_dir: str) -> None:
    """Fit every method of METHODS on the toy data and save the deployed weights and epoch history."""
    from debiaslab.engine.trainer import Trainer
    from debiaslab.methods.registry import get_method
    from debiaslab.utils import dist

    # 501 examples, global batch 64: the last batch of 53 splits 27 + 26 (the loss scaling is exercised)
    train, val = toy_splits(n_train=501)
    for name, extra in METHODS.items():
        method = get_method(name)(**{**tiny_mlp(), "epochs": 2, **extra})
        method.fit(train, val, trainer=Trainer(device="cpu", progress=False, seed=1, num_threads=1))
        history = [
            {k: v for k, v in rec.items() if (k.startswith("train_") and "time" not in k) or k == "val"}
            for rec in method.fit_result_.history
        ]
        torch.save(
            {"state": method.model_.state_dict(), "history": history},
            f"{out_dir}/{name}-rank{dist.rank()}-of{dist.world_size()}.pt",
        )


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        _fit_all(out_dir)
    finally:
        tdist.destroy_process_group()


def _assert_history_close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key, value in ra.items():
            if key == "val":
                for metric in ("accuracy", "worst_group"):
                    assert rb[key][metric] == pytest.approx(value[metric], abs=1.5 / 256)
            else:
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_two_processes_take_the_steps_of_one(tmp_path) -> None:
    """ERM, GroupDRO, LfF, BAM and ULE on two gloo processes end with the single process's weights and logged
    losses, and both processes hold the same weights."""
    import torch.multiprocessing as mp

    _fit_all(str(tmp_path))  # single process
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for name in METHODS:
        single = torch.load(tmp_path / f"{name}-rank0-of1.pt")
        ranks = [torch.load(tmp_path / f"{name}-rank{r}-of2.pt") for r in (0, 1)]
        for key, value in single["state"].items():
            assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), f"{name}: ranks differ in {key}"
            assert torch.allclose(ranks[0]["state"][key], value, atol=WEIGHT_ATOL), f"{name}: {key}"
        _assert_history_close(single["history"], ranks[0]["history"])


def test_local_batches_split_each_global_batch_and_scale_the_tail(monkeypatch) -> None:
    indices = torch.arange(11)
    monkeypatch.setattr(data_parallel.dist, "world_size", lambda: 2)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(data_parallel.dist, "rank", lambda rank=rank: rank)
        seen.append(list(data_parallel.local_batches(indices, 4, drop_last=False)))
    # global batches [0..3], [4..7], [8, 9, 10]: rank 0 takes even positions, rank 1 odd ones
    assert [b[0].tolist() for b in seen[0]] == [[0, 2], [4, 6], [8, 10]]
    assert [b[0].tolist() for b in seen[1]] == [[1, 3], [5, 7], [9]]
    assert [b[1] for b in seen[0]] == [4, 4, 3]
    # scale N * n_r / m: the tail's gradients weigh 2/3 and 1/3 of the global mean
    assert [b[2] for b in seen[0]] == [1.0, 1.0, pytest.approx(4 / 3)]
    assert seen[1][2][2] == pytest.approx(2 / 3)
    # a last batch smaller than the number of processes is skipped everywhere
    assert [b[0].tolist() for b in data_parallel.local_batches(torch.arange(9), 4, False)] == [[1, 3], [5, 7]]
    assert data_parallel.steps_per_epoch(9, 4, drop_last=False) == 2
    assert data_parallel.steps_per_epoch(11, 4, drop_last=False) == 3


def test_global_batch_that_does_not_divide_is_one_line_error(monkeypatch) -> None:
    monkeypatch.setattr(data_parallel.dist, "world_size", lambda: 4)
    stage = Stage("erm", torch.nn.Linear(2, 2), lambda b, c: None, lambda x: x, None, epochs=1, batch_size=90)
    with pytest.raises(ConfigError, match=r"batch size 90 \(stage 'erm'\) does not divide over 4 processes"):
        data_parallel.check_global_batch(stage)


def test_torchrun_run_matches_single_process_and_records_world_size(tmp_path, cache_dir, data_root) -> None:
    """The command line under torchrun: same ``--batch-size`` (the global batch), same metrics; only rank 0 writes,
    and ``final.json`` says how the run was trained."""
    common = ["-m", "debiaslab", "-q", "train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05",
              "--epochs", "1", "--seed", "3", "--cache-dir", str(cache_dir), "--data-root", str(data_root),
              "--no-progress", "--threads", "1", "--batch-size", "256",
              "--hp", "model_kwargs={width: 32, depth: 1}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, *common, "--out", str(single)], check=True, env=env)
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run([*torchrun, *common, "--out", str(ddp)], check=True, env=env, timeout=600)
    a = json.loads((single / "final.json").read_text())
    b = json.loads((ddp / "final.json").read_text())
    for metric in ("accuracy", "unbiased", "worst_group"):
        assert b["metrics"]["test"][metric] == pytest.approx(a["metrics"]["test"][metric], abs=0.002)
    assert (a["world_size"], a["global_batch_size"]) == (1, 256)
    assert (b["world_size"], b["global_batch_size"]) == (2, 256)
    assert "world_size: 2" in (ddp / "config.yaml").read_text()


def _record_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One rank of ``test_mistake_record_is_identical_on_every_rank``: update a record with this rank's shard."""
    import torch.distributed as tdist

    from debiaslab.methods.ule import MistakeMemory
    from debiaslab.utils import dist

    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        memory = MistakeMemory(10)
        index = torch.tensor([0, 2, 4]) + rank  # rank 0: 0 2 4, rank 1: 1 3 5
        memory.update(*dist.gather_cat(index, (index % 3 == 0).float()))
        torch.save(memory.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_mistake_record_is_identical_on_every_rank(tmp_path) -> None:
    """ULE's per-example mistake record (like LfF's EMA) sees every rank's examples, so the ranks never drift."""
    import torch.multiprocessing as mp

    mp.spawn(_record_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    expected = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0, 0, 0])  # indices 0-5 visited once, wrong where i % 3 == 0
    for state in states:
        assert torch.equal(state["value"], expected)
        assert torch.equal(state["visits"], torch.tensor([1.0] * 6 + [0.0] * 4))
