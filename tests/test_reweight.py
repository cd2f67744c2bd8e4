"""Reweighting, resampling and subsampling (group / class): exact weights, sampling shares, label checks, fits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import IndexListSampler, WeightedSampler
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import FitResult, get_method
from debiaslab.methods.reweight import (
    ResampleClass,
    ResampleGroup,
    ReweightClass,
    ReweightGroup,
    SubsampleClass,
    SubsampleGroup,
)
from toys import NoTrainingTrainer, tiny_mlp, toy_splits

NAMES = ["reweight_group", "reweight_class", "resample_group", "resample_class", "subsample_group", "subsample_class"]
GROUP_NAMES = [n for n in NAMES if n.endswith("_group")]
TINY = tiny_mlp(width=8)


def from_groups(groups: list[int], n_attrs: int = 2, n_classes: int = 2) -> GroupDataset:
    """A dataset whose examples fall in the given groups (group = y * n_attrs + attr); inputs are noise."""
    g = torch.tensor(groups)
    return GroupDataset(
        x=torch.randn(len(groups), 3), y=g // n_attrs, attr=g % n_attrs, n_classes=n_classes, n_attrs=n_attrs
    )


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits(256, 128, 0.1, n_features=6)


# ---------------------------------------------------------------------------------------------- weights
# groups 0 (x6), 1 (x3), 3 (x1); group 2 is empty. Classes: y=0 (x9), y=1 (x1).
TOY_GROUPS = [0] * 6 + [1] * 3 + [3]


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_group_weights_are_inverse_count_powers_with_mean_one(power: float) -> None:
    ds = from_groups(TOY_GROUPS)
    w = ReweightGroup(power=power).example_weights(ds)
    raw = [1 / c**power for c in [6] * 6 + [3] * 3 + [1]]
    mean = sum(raw) / len(raw)
    assert w.tolist() == pytest.approx([r / mean for r in raw], abs=1e-6)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    if power == 0.5:
        assert (w[9] / w[0]).item() == pytest.approx(math.sqrt(6), rel=1e-6)


def test_class_weights_use_class_counts() -> None:
    w = ReweightClass().example_weights(from_groups(TOY_GROUPS))
    # raw 1/9 (x9) and 1/1 (x1): mean 0.2
    assert w.tolist() == pytest.approx([1 / 9 / 0.2] * 9 + [5.0], abs=1e-6)


def test_power_is_validated() -> None:
    with pytest.raises(ConfigError, match="power"):
        ReweightGroup(power=-1.0)
    with pytest.raises(ConfigError, match="no hyperparameter 'power'"):
        ResampleGroup(power=0.5)


# ---------------------------------------------------------------------------------------------- samplers
def test_resample_group_draws_groups_uniformly_and_never_empty_ones() -> None:
    ds = from_groups([0] * 1500 + [1] * 450 + [3] * 50)
    sampler = ResampleGroup().sampler(ds)
    assert isinstance(sampler, WeightedSampler) and len(sampler) == len(ds)
    draws = torch.cat([sampler.epoch_indices(e, torch.Generator().manual_seed(e)) for e in range(3)])
    shares = torch.bincount(ds.group[draws], minlength=4).float() / draws.numel()
    assert shares[2].item() == 0.0
    assert shares[[0, 1, 3]].tolist() == pytest.approx([1 / 3] * 3, abs=0.03)


def test_resample_class_balances_classes() -> None:
    ds = from_groups([0] * 1800 + [3] * 200)
    draws = ResampleClass().sampler(ds).epoch_indices(0, torch.Generator().manual_seed(0))
    assert (ds.y[draws] == 1).float().mean().item() == pytest.approx(0.5, abs=0.04)


def test_subsample_keeps_min_count_per_group_and_class() -> None:
    ds = from_groups([0] * 7 + [1] * 3 + [3] * 5)
    torch.manual_seed(0)
    sampler = SubsampleGroup().sampler(ds)
    assert isinstance(sampler, IndexListSampler)
    assert torch.bincount(ds.group[sampler.indices], minlength=4).tolist() == [3, 3, 0, 3]
    by_class = SubsampleClass().sampler(ds)
    assert torch.bincount(ds.y[by_class.indices], minlength=2).tolist() == [5, 5]


def test_subsample_is_seeded_by_the_global_rng() -> None:
    ds = from_groups([0] * 50 + [1] * 5 + [3] * 20)
    picks = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        picks.append(SubsampleGroup().sampler(ds).indices)
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


# ---------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_variants_need_attributes_and_say_what_works(toy, name: str) -> None:
    train, val = toy
    no_attrs = GroupDataset(x=train.x, y=train.y, n_classes=2, n_attrs=2, name="toy", split="train")
    with pytest.raises(MissingLabelsError) as info:
        get_method(name)(**TINY, epochs=1).fit(no_attrs, val, trainer=NoTrainingTrainer(progress=False))
    message = str(info.value)
    assert name in message and "erm" in message and "reweight_class" in message
    assert "reweight_group" not in message.split("Methods that work")[1]


def test_class_variant_fits_without_attributes(toy) -> None:
    train, _ = toy
    no_attrs = GroupDataset(x=train.x, y=train.y, n_classes=2, n_attrs=2, name="toy", split="train")
    method = ReweightClass(**TINY, epochs=1).fit(no_attrs, None, trainer=Trainer(progress=False))
    assert method.fit_result_.selection == "last"


# ---------------------------------------------------------------------------------------------- fits
@pytest.mark.parametrize("name", NAMES)
def test_every_variant_fits_end_to_end(toy, name: str) -> None:
    train, val = toy
    method = get_method(name)(**TINY, epochs=2).fit(train, val, trainer=Trainer(progress=False, seed=3))
    result = method.fit_result_
    assert isinstance(result, FitResult) and isinstance(result.model, nn.Module)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.selection == "val_worst_group" and result.selected["stage"] == name
    assert method.predict_logits(val.x[:5]).shape == (5, 2)
    if name.startswith("subsample"):
        labels = train.group if name.endswith("group") else train.y
        n_min = int(torch.bincount(labels).min())
        assert result.extras["n_kept"] == n_min * int((torch.bincount(labels) > 0).sum())


@pytest.mark.parametrize("cls", [ReweightGroup, ResampleGroup, SubsampleGroup])
def test_group_variants_tolerate_an_empty_group(cls) -> None:
    train = from_groups([0] * 40 + [1] * 4 + [3] * 20)  # group 2 (y=1, attr=0) has no example
    method = cls(**TINY, epochs=1).fit(train, None, trainer=Trainer(progress=False))
    assert math.isfinite(method.fit_result_.history[0]["train_loss"])


def test_hparam_sources_are_recorded() -> None:
    m = ReweightGroup(dataset="colored_mnist")
    assert m.hparam_sources["lr"].startswith("LfF paper") and m.hparam_sources["power"].startswith("spec")
    assert m.hparams.selection == "val_unbiased"
