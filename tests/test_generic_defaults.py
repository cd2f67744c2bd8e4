"""Every method's generic defaults (a user's dataset, no named preset) train: a few epochs on a small `.npz` of
MNIST digits with a planted shortcut take the deployed model well away from chance (its premise check
``left_chance``, and a training accuracy of at least 40 % over 5 classes).

Only the number of epochs is capped here (the generic schedules run 100); the learning rate, the optimiser, the
schedule, the model and every method setting are the ones a user gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from debiaslab.data.mnist import load_mnist
from debiaslab.methods.registry import METHODS, list_methods
from debiaslab.run.train import RunConfig, train_run

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES, N_TRAIN, N_EVAL = 5, 2000, 500
EPOCHS = 6
#: a deployed model at this training accuracy or above (5 classes, about 20 % each) has clearly left chance
LEARNED = 0.4
#: per method, what differs from ``epochs=EPOCHS`` (the generic schedules run 100 epochs): a sparse REST network
#: and the teacher of mistake reweighting (its CE weighted onto the student's few mistakes) need a few more; group
#: subsampling keeps a few dozen examples, so its generic 100 epochs are a few hundred
#: steps; one BAM stage-2 epoch is its error set upsampled μ times, and μ is halved (its cost, not its optimiser);
#: the other stages' lengths (AFR's head steps, SSA's attribute-predictor steps) are capped like ``epochs``
CAPS: dict[str, dict] = {
    "afr": {"epochs": EPOCHS, "head_epochs": 100},
    "ssa": {"epochs": EPOCHS, "ssa_iters": 100},
    "bam": {"epochs": 1, "mu": 70},
    "denetdm": {"epochs": 3, "expert_epochs": 3},
    "dett": {"epochs": 3 * 12, "teacher_hparams": {"epochs": 2}},
    "kd": {"epochs": EPOCHS, "teacher_hparams": {"epochs": 2}},
    "mistake_reweight": {"epochs": 12},
    "rest": {"epochs": 12},
    "rest_free": {"epochs": 12},
    "subsample_group": {},
}


def shortcut_digits(path: Path, data_root: Path) -> Path:
    """MNIST digits 0-4 (``(N, 1, 28, 28)`` uint8) with a bright 4×4 patch at a class-specific place: on 95 % of
    the training images the patch names the digit, on validation and test it is random."""
    mnist = load_mnist(data_root, download=False)
    rng = np.random.default_rng(0)
    n = N_TRAIN + 2 * N_EVAL
    keep = np.flatnonzero(np.asarray(mnist.train_y) < N_CLASSES)[:n]
    x = np.asarray(mnist.train_x[keep]).reshape(n, 1, 28, 28).copy()
    y = np.asarray(mnist.train_y[keep]).astype(np.int64)
    split = np.repeat([0, 1, 2], [N_TRAIN, N_EVAL, N_EVAL])
    aligned = (rng.random(n) < 0.95) & (split == 0)
    attr = np.where(aligned, y, rng.integers(0, N_CLASSES, n))
    for i, a in enumerate(attr):
        x[i, 0, 2:6, 2 + 5 * int(a) : 6 + 5 * int(a)] = 255
    np.savez(path, x=x, y=y, attr=attr, split=split)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    return shortcut_digits(tmp_path_factory.mktemp("user") / "digits.npz", data_root)


def every_method() -> list[str]:
    """The package's methods (not the toy ones other test modules register in this process, e.g. one that kills
    its own process)."""
    list_methods()
    return [name for name in METHODS.names() if METHODS.get(name).__module__.startswith("debiaslab.")]


@pytest.mark.parametrize("method", every_method())
def test_generic_defaults_leave_chance(method: str, digits: Path, tmp_path: Path) -> None:
    hparams = CAPS.get(method, {"epochs": EPOCHS})
    cfg = RunConfig(
        method=method,
        dataset="arrays",
        dataset_options={"path": str(digits)},
        hparams=hparams,
        out=str(tmp_path / method),
        progress=False,
        num_threads=1,
    )
    final = train_run(cfg)
    chance = next(c for c in final["health"] if c["name"] == "left_chance")
    assert chance["status"] == "ok", chance["message"]
    assert chance["value"]["train_accuracy"] >= LEARNED, chance["value"]
