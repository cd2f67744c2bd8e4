"""GroupDRO: the q update and robust loss against hand-computed steps, absent/empty groups, checkpointed q, fits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import load_checkpoint
from debiaslab.engine.sampling import UniformSampler, WeightedSampler
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import FitResult
from debiaslab.methods.groupdro import GroupDRO, GroupDROWeights, group_mean_losses
from toys import assert_same_weights, full_and_resumed, resume, tiny_mlp, toy_splits

TINY = tiny_mlp(width=8)


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits(256, 128, 0.1, n_features=6)


def _normalise(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


# ---------------------------------------------------------------------------------------------- the update
def test_group_mean_losses_give_zero_for_absent_groups() -> None:
    losses = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0])
    means, counts = group_mean_losses(losses, torch.tensor([0, 0, 1, 1, 1]), 4)
    assert means.tolist() == [2.0, 3.0, 0.0, 0.0]
    assert counts.tolist() == [2.0, 3.0, 0.0, 0.0]


def test_q_update_and_loss_match_two_hand_computed_steps() -> None:
    eta, c = 0.1, 1.0
    n_g = [4, 16, 1, 0]  # group 3 never occurs in training: q_3 = 0 throughout
    dro = GroupDROWeights(torch.tensor(n_g), eta=eta, adjustment=c)
    assert dro.q.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])

    # step 1: groups 0 and 1 in the batch, group 2 absent (L_2 = 0, but still adjusted by C/sqrt(n_2))
    losses = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0], requires_grad=True)
    loss = dro(losses, torch.tensor([0, 0, 1, 1, 1]))
    big_l = [2.0, 3.0, 0.0]
    adjusted = [big_l[g] + c / math.sqrt(n_g[g]) for g in range(3)]  # 2.5, 3.25, 1.0
    q1 = [*_normalise([1 / 3 * math.exp(eta * a) for a in adjusted]), 0.0]
    assert dro.q.tolist() == pytest.approx(q1, abs=1e-6)
    assert loss.item() == pytest.approx(q1[0] * 2.0 + q1[1] * 3.0, abs=1e-6)
    # the gradient reaches each example through its group's mean, weighted by the (constant) new q
    loss.backward()
    expected_grad = [q1[0] / 2] * 2 + [q1[1] / 3] * 3
    assert losses.grad.tolist() == pytest.approx(expected_grad, abs=1e-6)

    # step 2 multiplies onto q1
    loss2 = dro(torch.tensor([4.0, 1.0]), torch.tensor([2, 0]))
    big_l2 = [1.0, 0.0, 4.0]
    adjusted2 = [big_l2[g] + c / math.sqrt(n_g[g]) for g in range(3)]
    q2 = [*_normalise([q1[g] * math.exp(eta * adjusted2[g]) for g in range(3)]), 0.0]
    assert dro.q.tolist() == pytest.approx(q2, abs=1e-6)
    assert loss2.item() == pytest.approx(q2[0] * 1.0 + q2[2] * 4.0, abs=1e-6)
    assert not dro.q.requires_grad


def test_q_never_overflows_with_huge_losses() -> None:
    dro = GroupDROWeights(torch.tensor([5, 5]), eta=1.0)
    for _ in range(3):
        dro(torch.tensor([1000.0, 0.0]), torch.tensor([0, 1]))
    assert torch.isfinite(dro.q).all() and dro.q[0].item() == pytest.approx(1.0)


def test_only_q_is_checkpointed_state() -> None:
    dro = GroupDROWeights(torch.tensor([3, 0, 2]), adjustment=2.0)
    assert list(dro.state_dict()) == ["q"]  # the adjustment is rebuilt from the training counts
    assert dro.q.tolist() == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(ConfigError):
        GroupDROWeights(torch.zeros(3))


# ---------------------------------------------------------------------------------------------- fitting
def test_fit_returns_the_network_and_logs_q(toy) -> None:
    train, val = toy
    method = GroupDRO(**TINY, epochs=2).fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    assert isinstance(result, FitResult) and not isinstance(result.model, nn.ModuleDict)
    assert method.predict_logits(val.x[:4]).shape == (4, 2)
    assert result.model_spec["name"] == "mlp"
    q = result.extras["group_weights"]
    assert len(q) == 4 and sum(q) == pytest.approx(1.0, abs=1e-5)
    for line in result.history:
        assert 0.25 <= line["train_q_max"] <= 1.0
        assert line["q_max_group"] in range(4)


def test_sampler_follows_the_group_balanced_flag(toy, monkeypatch) -> None:
    train, _ = toy
    seen = []
    real = Trainer.run_stage

    def spy(self, name, build, *args, **kwargs):
        seen.append(type(build().sampler))
        return real(self, name, build, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run_stage", spy)
    for flag in (True, False):
        GroupDRO(**TINY, epochs=1, group_balanced=flag).fit(train, None, trainer=Trainer(progress=False))
    assert seen == [WeightedSampler, UniformSampler]


def test_q_survives_checkpoint_and_resume(toy, tmp_path) -> None:
    train, _ = toy

    def q_saved(cut) -> None:
        saved = load_checkpoint(cut / "checkpoints" / "groupdro.last.pt")["modules"]["dro.q"]
        assert not torch.allclose(saved, torch.full((4,), 0.25))  # q moved away from uniform and was saved

    full, resumed = full_and_resumed(
        lambda: GroupDRO(**TINY, epochs=3, eta=0.5), train, None, tmp_path, epoch=2, seed=5, between=q_saved
    )
    assert resumed.fit_result_.extras["group_weights"] == full.fit_result_.extras["group_weights"]
    assert_same_weights(full.model_, resumed.model_)
    # a finished stage is restored with its q
    again = resume(GroupDRO(**TINY, epochs=3, eta=0.5), train, None, tmp_path / "cut", seed=5)
    assert again.fit_result_.stages[0].resumed
    assert again.fit_result_.extras["group_weights"] == full.fit_result_.extras["group_weights"]


def test_empty_training_group_keeps_zero_weight() -> None:
    y = torch.tensor([0] * 40 + [0] * 5 + [1] * 20)
    attr = torch.tensor([0] * 40 + [1] * 5 + [1] * 20)  # group 2 (y=1, attr=0) is empty
    train = GroupDataset(x=torch.randn(65, 3), y=y, attr=attr, n_classes=2, n_attrs=2)
    method = GroupDRO(**TINY, epochs=1, adjustment=1.0).fit(train, None, trainer=Trainer(progress=False))
    q = method.fit_result_.extras["group_weights"]
    assert q[2] == 0.0 and sum(q) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- contract
def test_needs_training_attributes_before_training(toy) -> None:
    train, val = toy
    no_attrs = GroupDataset(x=train.x, y=train.y, n_classes=2, n_attrs=2, name="toy", split="train")
    with pytest.raises(MissingLabelsError, match=r"groupdro.*Methods that work.*erm"):
        GroupDRO(**TINY, epochs=1).fit(no_attrs, val)


def test_hparams_defaults_sources_and_validation() -> None:
    m = GroupDRO(dataset="colored_mnist")
    assert (m.hparams.eta, m.hparams.adjustment, m.hparams.group_balanced) == (0.01, 0.0, True)
    assert m.hparam_sources["eta"].startswith("ours:") and m.hparam_sources["lr"].startswith("LfF paper")
    assert "group_DRO" in GroupDRO().hparam_sources["eta"]
    with pytest.raises(ConfigError, match="eta"):
        GroupDRO(eta=-0.1)
    with pytest.raises(ConfigError, match="adjustment"):
        GroupDRO(adjustment=-1.0)
