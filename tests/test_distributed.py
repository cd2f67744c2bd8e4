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
