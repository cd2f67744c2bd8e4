"""Mixup and LISA: which examples are mixed with which (same label across attributes, same attribute across labels),
the mixed labels, CutMix, the presets of SubpopBench and the LISA code, and an interrupted LISA run (random draws
inside the loss) that resumes as if never stopped."""

from __future__ import annotations

import math

import pytest
import torch

from debiaslab.engine.sampling import UniformSampler, WeightedSampler
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.lisa import mix_pair, selective_mix
from debiaslab.methods.mixup import mixable
from toys import assert_same_run, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

# eight examples: label y, attribute a; every (y, a) group has two
Y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
A = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])


def mixed_sources(x: torch.Tensor) -> list[list[int]]:
    """With one-hot inputs ``x = I``: the examples each mixed row combines."""
    return [torch.nonzero(row > 1e-6).flatten().tolist() for row in x]


@pytest.mark.parametrize("intra_label", [True, False])
def test_selective_mix_pairs_across_the_other_label_only(intra_label: bool) -> None:
    torch.manual_seed(0)
    x, onehot = torch.eye(8), torch.nn.functional.one_hot(Y, 2).float()
    outer, inner = (Y, A) if intra_label else (A, Y)
    mixed, targets = selective_mix(x, onehot, outer, inner, alpha=2.0, method="mixup")
    assert mixed.shape == x.shape and torch.allclose(targets.sum(1), torch.ones(8))
    for row, target, sources in zip(mixed, targets, mixed_sources(mixed), strict=True):
        assert len(sources) in (1, 2)
        if len(sources) == 2:
            i, j = sources
            assert outer[i] == outer[j] and inner[i] != inner[j]
            # the label mixes with the weights of the inputs
            assert torch.allclose(target, row[i] * onehot[i] + row[j] * onehot[j], atol=1e-6)
    if intra_label:
        assert torch.equal(targets.argmax(1).bincount(minlength=2) > 0, torch.tensor([True, True]))


def test_selective_mix_without_a_pair_returns_the_batch() -> None:
    x, onehot = torch.eye(4), torch.nn.functional.one_hot(Y[:4], 2).float()
    same = torch.zeros(4, dtype=torch.long)
    out_x, out_y = selective_mix(x, onehot, Y[:4], same, alpha=2.0, method="mixup")  # one attribute only
    assert out_x is x and out_y is onehot


def test_cutmix_mixes_image_boxes_and_refuses_vectors() -> None:
    torch.manual_seed(0)
    a, b = torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8)
    ya, yb = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[0.0, 1.0]] * 3)
    x, y = mix_pair(a, b, ya, yb, alpha=2.0, method="cutmix")
    assert x.shape == (6, 1, 8, 8)
    share_from_b = x[:3].mean((1, 2, 3))  # the first half is a's images with a box pasted from b
    assert torch.allclose(y[:3, 1], share_from_b)
    with pytest.raises(ConfigError, match="cutmix needs image inputs"):
        mix_pair(torch.zeros(2, 4), torch.zeros(2, 4), ya[:2], yb[:2], alpha=2.0, method="cutmix")


def test_integer_inputs_are_mixed_as_features_only() -> None:
    with pytest.raises(ConfigError, match="use mix_on=features"):
        mixable(torch.nn.Identity(), torch.zeros(2, 3, dtype=torch.long), "input")


def test_presets_follow_the_lisa_code_and_subpopbench() -> None:
    lisa, mixup = get_method("lisa")(), get_method("mixup")()
    assert (lisa.hparams.alpha, lisa.hparams.p_sel, lisa.hparams.mix_method, lisa.hparams.group_balanced) == (
        2.0,
        0.5,
        "mixup",
        True,
    )
    assert "run_expt.py" in lisa.hparam_sources["p_sel"] and "hparams_registry.py" in mixup.hparam_sources["alpha"]
    assert mixup.hparams.alpha == 0.2
    celeba = get_method("lisa")(dataset="celeba").hparams
    assert (celeba.mix_method, celeba.lr, celeba.epochs, celeba.batch_size) == ("cutmix", 1e-4, 50, 64)
    assert get_method("lisa")(dataset="waterbirds").hparams.lr == 1e-3
    with pytest.raises(ConfigError, match="cutmix cuts image boxes"):
        get_method("lisa")(mix_method="cutmix", mix_on="features")


def test_lisa_samples_groups_evenly_unless_told_not_to() -> None:
    train, _ = toy_splits(64, 32, 0.1, n_features=6)
    assert isinstance(get_method("lisa")().sampler(train), WeightedSampler)
    assert isinstance(get_method("lisa")(group_balanced=False).sampler(train), UniformSampler)


def test_lisa_needs_training_attributes_mixup_does_not() -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6, attrs=False)
    with pytest.raises(MissingLabelsError, match="lisa"):
        get_method("lisa")(**tiny_mlp(8), epochs=1).fit(train, val)
    for mix_on in ("input", "features"):
        fitted = get_method("mixup")(**tiny_mlp(8), epochs=1, mix_on=mix_on, selection="val_worst_class")
        fitted.fit(train, val, trainer=Trainer(progress=False))
        assert math.isfinite(fitted.fit_result_.history[-1]["train_loss"])


def test_interrupted_lisa_resumes_as_if_never_stopped(tmp_path) -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6)
    full, resumed = full_and_resumed(
        lambda: get_method("lisa")(**tiny_mlp(8), epochs=3), train, val, tmp_path, epoch=1, seed=2
    )
    assert_same_run(full, resumed)
