"""Shared test helpers (``from toys import ...``): tiny synthetic spurious datasets, small-MLP hyperparameters,
trainers that record, refuse or die mid-run, and interrupt-then-resume runs compared with uninterrupted ones."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import clone_state
from debiaslab.engine.sampling import IndexListSampler
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.base import Method


# ---------------------------------------------------------------------------------------------- data
def make_split(
    n: int,
    seed: int,
    split: str,
    conflict: float,
    *,
    n_classes: int = 2,
    n_features: int = 8,
    attrs: bool = True,
    one_hot: bool = False,
    shape: Sequence[int] | None = None,
) -> GroupDataset:
    """``n`` examples whose spurious attribute agrees with the label except for a ``conflict`` share.

    Default (two classes): a weak core feature ``x[0] += ±1`` and a strong spurious one ``x[1] += ±2``.
    ``one_hot`` (any K): a conflicting attribute is another class drawn uniformly; ``x[y] += 1`` (core) and
    ``x[K + attr] += 3`` (spurious). ``attrs=False`` leaves out the attribute labels; ``shape`` reshapes each
    input (e.g. ``(2, 2, 2)``: the 8 features as a 2-channel 2×2 image).
    """
    if n_classes != 2 and not one_hot:
        raise ValueError("more than two classes need one_hot=True")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    other = (y + torch.randint(1, n_classes, (n,), generator=g)) % n_classes if one_hot else 1 - y
    attr = torch.where(torch.rand(n, generator=g) < conflict, other, y)
    x = torch.randn(n, n_features, generator=g) * 0.5
    if one_hot:
        rows = torch.arange(n)
        x[rows, y] += 1.0
        x[rows, n_classes + attr] += 3.0
    else:
        x[:, 0] += 2.0 * y - 1.0
        x[:, 1] += 4.0 * attr - 2.0
    if shape is not None:
        x = x.reshape(n, *shape)
    return GroupDataset(
        x=x, y=y, attr=attr if attrs else None, n_classes=n_classes, n_attrs=n_classes, name="toy", split=split
    )


def toy_splits(
    n_train: int = 512, n_val: int = 256, conflict: float = 0.05, *, seed: int = 0, **kw: Any
) -> tuple[GroupDataset, GroupDataset]:
    """A biased training split (seed ``seed``) and a balanced validation split (``conflict`` 0.5, seed ``seed + 1``);
    ``kw`` go to :func:`make_split`."""
    return make_split(n_train, seed, "train", conflict, **kw), make_split(n_val, seed + 1, "val", 0.5, **kw)


def shortcut_split(
    n: int,
    seed: int,
    split: str,
    aligned: float,
    *,
    class_prior: float = 0.5,
    core: float = 1.0,
    spurious: float = 2.0,
    spurious_noise: float = 0.2,
    n_noise: int = 4,
) -> GroupDataset:
    """Two classes where a shortcut is easier than the core feature: ``x[0] = ±core + N(0, 1)`` (noisy core,
    about 84 % accurate alone at ``core=1``) and ``x[1] = ±spurious + N(0, spurious_noise²)`` (a nearly noiseless
    spurious feature), the attribute agreeing with the label on an ``aligned`` share; ``n_noise`` pure-noise
    features. ``class_prior`` is P(y = 1). On a 97 % aligned training split the training-distribution optimum
    follows the shortcut and gets most conflicting examples wrong; the group-balanced optimum uses the core."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < class_prior).long()
    attr = torch.where(torch.rand(n, generator=g) < aligned, y, 1 - y)
    x = torch.randn(n, 2 + n_noise, generator=g)
    x[:, 0] += core * (2.0 * y - 1.0)
    x[:, 1] = spurious * (2.0 * attr - 1.0) + spurious_noise * x[:, 1]
    return GroupDataset(x=x, y=y, attr=attr, n_classes=2, n_attrs=2, name="shortcut", split=split)


def tiny_mlp(width: int = 16, lr: float = 1e-2) -> dict[str, Any]:
    """Hyperparameters of a small run: an MLP with one hidden layer, batch size 64."""
    return {"model": "mlp", "model_kwargs": {"width": width, "depth": 1}, "batch_size": 64, "lr": lr}


# ---------------------------------------------------------------------------------------------- trainers
class RecordingTrainer(Trainer):
    """Keeps every built stage, its initial weights and how many epochs it trained."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(progress=False, **kw)
        self.stages: dict = {}
        self.initial: dict = {}
        self.epochs_run: Counter = Counter()

    def run_stage(self, name, build, train, val=None):
        stage, result = super().run_stage(name, build, train, val)
        self.stages[name] = stage
        return stage, result

    def _train(self, stage, rule, train, val):
        self.initial[stage.name] = clone_state(stage.modules)
        return super()._train(stage, rule, train, val)

    def _train_epoch(self, stage, train, optimizer, flat_params, ctx):
        self.epochs_run[stage.name] += 1
        return super()._train_epoch(stage, train, optimizer, flat_params, ctx)


class NoTrainingTrainer(Trainer):
    """Fails the test if any stage starts (for checks that must stop a run before training)."""

    def run_stage(self, *args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("training started")


class Interrupt(Exception):
    """Raised by :class:`InterruptingTrainer`."""


class InterruptingTrainer(Trainer):
    """Dies at the start of 0-based epoch ``die_in_epoch`` (of stage ``stage``; None: of any stage), like a killed
    process: that epoch's checkpoint is never written."""

    def __init__(self, die_in_epoch: int, stage: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.die_in_epoch, self.die_in_stage = die_in_epoch, stage

    def _train_epoch(self, stage, train, optimizer, flat_params, ctx):
        if ctx.epoch == self.die_in_epoch and self.die_in_stage in (None, stage.name):
            raise Interrupt
        return super()._train_epoch(stage, train, optimizer, flat_params, ctx)


# ---------------------------------------------------------------------------------------------- resume
def interrupt(
    method: Method,
    train: GroupDataset,
    val: GroupDataset | None,
    run_dir: Path,
    *,
    epoch: int,
    seed: int,
    stage: str | None = None,
) -> None:
    """Fit ``method`` in ``run_dir`` until it dies at ``epoch`` (of ``stage``), checking that it did die."""
    trainer = InterruptingTrainer(epoch, stage, progress=False, seed=seed, run_dir=run_dir)
    with pytest.raises(Interrupt):
        method.fit(train, val, trainer=trainer)


def resume(method: Method, train: GroupDataset, val: GroupDataset | None, run_dir: Path, *, seed: int) -> Method:
    """Fit ``method`` resuming from the checkpoints in ``run_dir``."""
    return method.fit(train, val, trainer=Trainer(progress=False, seed=seed, run_dir=run_dir, resume=True))


def full_and_resumed(
    make: Callable[[], Method],
    train: GroupDataset,
    val: GroupDataset | None,
    tmp_path: Path,
    *,
    epoch: int,
    seed: int,
    stage: str | None = None,
    between: Callable[[Path], None] | None = None,
) -> tuple[Method, Method]:
    """The same run fitted uninterrupted (in ``tmp_path/full``) and interrupted at ``epoch`` of ``stage`` then
    resumed (in ``tmp_path/cut``); ``between(tmp_path / "cut")`` runs after the interruption."""
    full = make().fit(train, val, trainer=Trainer(progress=False, seed=seed, run_dir=tmp_path / "full"))
    cut = tmp_path / "cut"
    interrupt(make(), train, val, cut, epoch=epoch, seed=seed, stage=stage)
    if between is not None:
        between(cut)
    return full, resume(make(), train, val, cut, seed=seed)


def assert_same_run(full: Method, resumed: Method) -> None:
    """An interrupted-and-resumed fit logged the same history as the uninterrupted one (timings aside) and deploys
    the same weights."""
    assert comparable(resumed.fit_result_.history) == comparable(full.fit_result_.history)
    assert_same_weights(full.model_, resumed.model_)


def assert_upsampled(sampler: Any, n: int, errors: torch.Tensor, times: int) -> None:
    """``sampler`` is an index list with every index of ``errors`` ``times`` times and the rest of ``range(n)`` once."""
    assert isinstance(sampler, IndexListSampler)
    counts = torch.bincount(sampler.indices, minlength=n)
    is_error = torch.zeros(n, dtype=torch.bool)
    is_error[errors] = True
    assert bool((counts[is_error] == times).all()) and bool((counts[~is_error] == 1).all())


def comparable(history: list[dict[str, Any]]) -> str:
    """A history as text without its timings: equal runs give equal strings (NaN metrics included)."""
    return repr([{k: v for k, v in line.items() if "time" not in k} for line in history])


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    """``a`` and ``b`` have the same state, key by key and bit for bit."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` (scripts, not a package) as a module for its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- weights
def hash_named_weights(state: dict[str, torch.Tensor], folder: Path, stem: str) -> Path:
    """``state`` saved as ``<folder>/<stem>-<first 8 hex of its SHA-256>.pth``: a file named the way published
    weights are (torchvision's ``resnet18-f37072fd.pth``), so a download can check it."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f"{stem}.staged"
    torch.save(state, staged)
    final = folder / f"{stem}-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    staged.replace(final)
    return final


def torchvision_resnet18_state(n_classes: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict in torchvision's published layout: ``fc.`` for the classifier and, as in
    ``resnet18-f37072fd.pth``, no BatchNorm step counters."""
    from debiaslab.models import build_model

    torch.manual_seed(seed)
    state = build_model("resnet18", (3, 32, 32), n_classes).state_dict()
    return {
        ("fc." + k[5:] if k.startswith("head.") else k): v.clone()
        for k, v in state.items()
        if "num_batches_tracked" not in k
    }
