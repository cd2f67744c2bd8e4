"""IRM, V-REx, CORAL and MMD: the penalties against hand computations, environments from attributes or groups, the
annealed weight, presets pinned to SubpopBench / DomainBed, the training labels they need, and an interrupted IRM
run that resumes across the annealing step as if never stopped."""

from __future__ import annotations

import math

import pytest
import torch

from debiaslab.data.core import Batch
from debiaslab.engine.stage import StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.coral import coral_distance
from debiaslab.methods.environments import environment_masks, environment_risks
from debiaslab.methods.irm import IRMHparams, irm_penalty, irm_risk_and_penalty
from debiaslab.methods.mmd import mmd_distance
from debiaslab.methods.vrex import risk_variance
from toys import assert_same_run, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["irm", "vrex", "coral", "mmd"]


def scale_gradient(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/ds CE(s·z, y) at s = 1, by hand: the batch mean of ``Σ_k p_k z_k − z_y``."""
    p = torch.softmax(logits, 1)
    return ((p * logits).sum(1) - logits.gather(1, y.view(-1, 1)).squeeze(1)).mean()


def test_irm_penalty_is_the_product_of_the_halves_scale_gradients() -> None:
    logits = torch.tensor([[1.0, -1.0], [0.5, 2.0], [2.0, 0.0], [-1.0, 1.5]], requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    expected = scale_gradient(logits[::2], y[::2]) * scale_gradient(logits[1::2], y[1::2])
    penalty = irm_penalty(logits, y)
    assert torch.isclose(penalty, expected)
    penalty.backward()  # differentiable with respect to the model's outputs
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def per_environment(logits: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor]):
    """IRM's risk and penalty by definition: one cross-entropy and one double back-propagation per environment."""
    nll = torch.stack([torch.nn.functional.cross_entropy(logits[m], y[m]) for m in masks]).mean()
    terms = [irm_penalty(logits[m], y[m]) for m in masks if int(m.sum()) > 1]
    return nll, torch.stack(terms).mean() if terms else logits.new_zeros(())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_irm_risk_and_penalty_equal_the_per_environment_definition_with_their_gradients(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(37, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (37,), generator=gen)
    attr = torch.randint(0, 4, (37,), generator=gen)
    attr[-1] = 7  # an environment of one example: in the risk, not in the penalty
    masks = [attr == a for a in torch.unique(attr)]
    want = [logits.clone().requires_grad_(True) for _ in range(2)]
    expected = per_environment(want[0], y, masks)
    got = irm_risk_and_penalty(want[1], y, masks)
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    (expected[0] + 3.0 * expected[1]).backward()
    (got[0] + 3.0 * got[1]).backward()
    assert torch.allclose(want[0].grad, want[1].grad, atol=1e-12)
    risks = torch.stack([torch.nn.functional.cross_entropy(logits[m], y[m]) for m in masks])
    assert torch.allclose(environment_risks(logits, y, masks), risks, atol=1e-12)  # V-REx's risks, IRM's mean
    single = [torch.arange(3) == i for i in range(3)]  # every environment one example: no penalty at all
    assert float(irm_risk_and_penalty(logits[:3], y[:3], single)[1]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pass_mmd_penalty_equals_the_mean_over_pairs_with_its_gradient(seed: int) -> None:
    from debiaslab.methods.coral import FeatureMatching
    from debiaslab.methods.mmd import MMD

    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(41, 6, generator=gen, dtype=torch.float64) * 0.3
    attr = torch.randint(0, 5, (41,), generator=gen)
    attr[-1] = 9  # an environment of one example (MMD's kernel mean takes it)
    masks = [attr == a for a in torch.unique(attr)]
    inputs = [phi.clone().requires_grad_(True) for _ in range(2)]
    expected = torch.stack([mmd_distance(inputs[0][a], inputs[0][b]) for i, a in enumerate(masks)
                            for b in masks[i + 1:]]).mean()  # fmt: skip
    got = MMD.penalty(inputs[1], masks)
    assert torch.allclose(expected, got, atol=1e-12)
    expected.backward()
    got.backward()
    assert torch.allclose(inputs[0].grad, inputs[1].grad, atol=1e-12)
    assert MMD.penalty(phi, masks[:1]) is None and FeatureMatching.penalty(phi, masks[:1]) is None


def test_penalty_weight_is_one_until_the_annealing_step() -> None:
    hp = IRMHparams()
    assert (hp.weight_at(0), hp.weight_at(499), hp.weight_at(500)) == (1.0, 1.0, 100.0)


def test_environments_are_attribute_values_or_groups() -> None:
    batch = Batch(
        torch.zeros(4, 1),
        torch.tensor([0, 0, 1, 1]),
        torch.tensor([0, 1, 1, 1]),
        torch.tensor([0, 1, 3, 3]),
        torch.arange(4),
    )
    assert [m.tolist() for m in environment_masks(batch, "attr")] == [[1, 0, 0, 0], [0, 1, 1, 1]]
    assert len(environment_masks(batch, "group")) == 3


def test_risk_variance_and_feature_distances() -> None:
    mean, var = risk_variance(torch.tensor([1.0, 3.0]))
    assert (float(mean), float(var)) == (2.0, 1.0)  # the population variance, as DomainBed
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert float(coral_distance(a, a)) == 0.0 and float(mmd_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
    # means differ by (1, 0): mean term 1/2; covariances equal; so the CORAL distance is 0.5
    assert float(coral_distance(a, a + torch.tensor([1.0, 0.0]))) == pytest.approx(0.5)
    assert float(mmd_distance(a, a + 3.0)) > 0


def test_irm_loss_survives_a_one_example_environment() -> None:
    method = get_method("irm")(**tiny_mlp(8))
    model = method.build_model(toy_splits(8, 8, 0.1, n_features=6)[0])
    loss = method.loss_fn(model, None, torch.device("cpu"))
    batch = Batch(
        torch.randn(5, 6),
        torch.tensor([0, 1, 0, 1, 1]),
        torch.tensor([0, 0, 0, 0, 1]),
        torch.zeros(5, dtype=torch.long),
        torch.arange(5),
    )
    out = loss(batch, StepContext("irm", epoch=0, step=0, epochs=1, steps_per_epoch=1))
    assert math.isfinite(float(out["loss"].detach())) and math.isfinite(float(out["penalty"]))


def test_presets_follow_subpopbench_and_domainbed() -> None:
    irm, vrex, coral, mmd = (get_method(n)() for n in NAMES)
    assert (irm.hparams.penalty_weight, irm.hparams.anneal_steps) == (100.0, 500)
    assert "hparams_registry.py" in irm.hparam_sources["penalty_weight"]
    assert (vrex.hparams.penalty_weight, vrex.hparams.anneal_steps) == (10.0, 500)
    assert "DomainBed" in vrex.hparam_sources["penalty_weight"]
    assert coral.hparams.penalty_weight == 1.0
    assert get_method("mmd")(dataset="colored_mnist").hparams.penalty_weight == 1.0  # every preset: SubpopBench's
    assert mmd.hparams.penalty_weight == 0.1 and "log K" in mmd.hparam_sources["penalty_weight"]  # no preset
    assert all(m.hparams.environments == "attr" for m in (irm, vrex, coral, mmd))
    assert "algorithms.py" in irm.hparam_sources["environments"]
    lam = irm.search_space["penalty_weight"]  # 10^U(-1, 5)
    assert (lam.kind, lam.low, lam.high) == ("loguniform", 0.1, 1e5)
    with pytest.raises(ConfigError, match="environments 'domain' unknown"):
        get_method("irm")(environments="domain")


@pytest.mark.parametrize("name", NAMES)
def test_needs_training_attributes_and_fits(name: str) -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6)
    unlabeled, _ = toy_splits(128, 64, 0.1, n_features=6, attrs=False)
    with pytest.raises(MissingLabelsError, match=name):
        get_method(name)(**tiny_mlp(8), epochs=1).fit(unlabeled, val)
    fitted = get_method(name)(**tiny_mlp(8), epochs=2, anneal_steps=1) if name in ("irm", "vrex") else None
    fitted = fitted or get_method(name)(**tiny_mlp(8), epochs=2)
    fitted.fit(train, val, trainer=Trainer(progress=False, seed=0))
    last = fitted.fit_result_.history[-1]
    assert math.isfinite(last["train_loss"]) and last["train_penalty"] >= 0


def test_interrupted_irm_resumes_across_the_annealing_step(tmp_path) -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6)

    def make():  # 2 steps per epoch: the weight jumps at step 3, inside epoch 2
        return get_method("irm")(**tiny_mlp(8), epochs=3, anneal_steps=3, penalty_weight=10.0)

    full, resumed = full_and_resumed(make, train, val, tmp_path, epoch=2, seed=1)
    assert_same_run(full, resumed)
