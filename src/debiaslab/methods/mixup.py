"""Mixup (Zhang, Cisse, Dauphin, Lopez-Paz; ICLR 2018): train on convex combinations of pairs of examples.

Per batch one ``λ ~ Beta(α, α)`` and a random pairing of the batch with itself: the model sees ``λ x_i + (1 − λ) x_j``
and the loss is ``λ CE(·, y_i) + (1 − λ) CE(·, y_j)`` (SubpopBench algorithms.py, ``Mixup``, and misc.py
``mixup_data``). ``mix_on = "features"`` mixes the penultimate features instead of the inputs, as SubpopBench does for
text (token ids cannot be interpolated). Needs no attribute labels. The random draws come from torch's generator,
which the trainer seeds per stage and checkpoints, so a resumed run mixes as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import StepContext
from debiaslab.errors import ConfigError
from debiaslab.methods.hparams import POSITIVE, Default, HparamTable, TrainHparams, bounded, one_of
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform

MIX_ON = ("input", "features")


def beta_sample(alpha: float, shape: tuple[int, ...] = ()) -> Tensor:
    """``Beta(α, α)`` draws from torch's global generator (on the CPU)."""
    concentration = torch.full(shape, float(alpha))
    return torch.distributions.Beta(concentration, concentration).sample()


def mixable(model: nn.Module, x: Tensor, mix_on: str) -> tuple[Tensor, nn.Module]:
    """What is mixed and what maps it to logits: the inputs and the model, or the features and the head."""
    if mix_on == "features":
        return model.features(x), model.head
    if not torch.is_floating_point(x):
        raise ConfigError(
            f"cannot mix inputs of dtype {x.dtype} (token ids or integer pixels); use mix_on=features, which mixes "
            "the penultimate features"
        )
    return x, model


@dataclass
class MixHparams(TrainHparams):
    """Mixing: ``alpha`` of the Beta(α, α) weights; ``mix_on`` the inputs (``input``) or the features."""

    alpha: float = bounded(0.2, POSITIVE, "the Beta(α, α) concentration")
    mix_on: str = one_of("input", MIX_ON)


@register_method("mixup")
class Mixup(OneStage):
    """ERM on mixed pairs of the batch, one Beta(α, α) weight per batch."""

    summary = "train on λ-mixtures of random pairs of examples and of their labels (Zhang et al. 2018)"
    family = "augmentation"
    Hparams = MixHparams
    #: searched by `debiaslab tune`: α over SubpopBench's and DomainBed's range 10^U(−1, 1)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "alpha": loguniform(0.1, 10.0)}
    hparam_table: ClassVar[HparamTable] = {
        "*": {"alpha": Default(0.2, f"{SUBPOP_REGISTRY}: Mixup mixup_alpha 0.2 (random search 10^U(−1, 1))")},
    }

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: MixHparams = self.hparams  # type: ignore[assignment]

        def loss(batch: Batch, ctx: StepContext) -> Tensor:
            inputs, rest = mixable(model, batch.x, hp.mix_on)
            lam = float(beta_sample(hp.alpha))
            partner = torch.randperm(len(batch.y)).to(batch.y.device)
            logits = rest(lam * inputs + (1.0 - lam) * inputs[partner])
            return lam * F.cross_entropy(logits, batch.y) + (1.0 - lam) * F.cross_entropy(logits, batch.y[partner])

        return loss
