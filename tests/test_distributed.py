"""One run on two processes (torchrun, gloo on CPU) equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_two_process_run_matches_single_process(tmp_path, cache_dir, data_root) -> None:
    common = ["-m", "debiaslab", "-q", "train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.05",
              "--epochs", "1", "--seed", "3", "--cache-dir", str(cache_dir), "--data-root", str(data_root),
              "--no-progress", "--threads", "1",
              "--hp", "model_kwargs={width: 32, depth: 1}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, *common, "--batch-size", "256", "--out", str(single)], check=True, env=env)
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # each rank takes every other index of the same permutation: 2 x 128 per step == one batch of 256
    subprocess.run([*torchrun, *common, "--batch-size", "128", "--out", str(ddp)], check=True, env=env, timeout=600)
    a = json.loads((single / "final.json").read_text())["metrics"]["test"]
    b = json.loads((ddp / "final.json").read_text())["metrics"]["test"]
    assert b["accuracy"] == pytest.approx(a["accuracy"], abs=0.01)
    assert b["unbiased"] == pytest.approx(a["unbiased"], abs=0.01)
    config = (ddp / "config.yaml").read_text()
    assert "world_size: 2" in config


def _record_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One rank of ``test_mistake_record_is_identical_on_every_rank``: update a record with this rank's shard."""
    import torch
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
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_record_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    expected = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0, 0, 0])  # indices 0-5 visited once, wrong where i % 3 == 0
    for state in states:
        assert torch.equal(state["value"], expected)
        assert torch.equal(state["visits"], torch.tensor([1.0] * 6 + [0.0] * 4))
