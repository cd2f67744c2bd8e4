"""LISA, selective augmentation (Yao, Wang, Li, Zhang, Liang, Zou, Finn; ICML 2022): mixup only across a shortcut.

Each step, with probability ``p_sel`` the batch is mixed *within each label across two attribute values* (the mixed
example keeps its label while the attribute becomes uninformative), otherwise *within each attribute value across two
labels* (the attribute is held fixed while the label changes). For each label (attribute value) in the batch two
distinct attribute values (labels) are drawn at random and their examples are paired in batch order, each pair with
its own ``λ ~ Beta(α, α)`` (or one CutMix box per pairing for images); pairings repeat until a batch's worth of mixed
examples exists, which are shuffled and cut to the batch size; the loss is the cross-entropy against the mixed
one-hot labels. A batch with no pair to mix trains on itself. This follows SubpopBench (algorithms.py, ``LISA``);
the authors' code (huaxiuyao/LISA, subpopulation_shifts) draws the same number of examples from every group each step,
which ``group_balanced`` (on by default) reproduces with group-balanced sampling. Needs training attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.sampling import Sampler, UniformSampler, group_balanced_sampler
from debiaslab.engine.stage import StepContext
from debiaslab.errors import ConfigError
from debiaslab.methods.base import Requirements
from debiaslab.methods.hparams import POSITIVE, Default, HparamTable, bounded, one_of
from debiaslab.methods.mixup import MixHparams, beta_sample, mixable
from debiaslab.methods.one_stage import LossFn, OneStage
from debiaslab.methods.presets import SUBPOP_REGISTRY
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform, uniform

MIX_METHODS = ("mixup", "cutmix")
LISA_CODE = "LISA official code (huaxiuyao/LISA, subpopulation_shifts/run_expt.py)"
LISA_README_CUB = f"{LISA_CODE} README, Waterbirds: lr 1e-3, weight decay 1e-4, batch 16 × 4 groups, 300 epochs"
LISA_README_CELEBA = f"{LISA_CODE} README, CelebA: lr 1e-4, weight decay 1e-4, batch 16 × 4 groups, 50 epochs, cutmix"


def mix_pair(a: Tensor, b: Tensor, ya: Tensor, yb: Tensor, alpha: float, method: str) -> tuple[Tensor, Tensor]:
    """Mix two equally long sets: ``mixup`` with one ``λ ~ Beta(α, α)`` per pair, or ``cutmix`` (both orders, one box
    per call, ``λ`` the kept area) -- the inputs and their (one-hot) labels alike."""
    if method == "mixup":
        lam = beta_sample(alpha, (len(a),)).to(a.device, a.dtype)
        shape = (-1,) + (1,) * (a.dim() - 1)
        return lam.view(shape) * a + (1 - lam.view(shape)) * b, lam.view(-1, 1) * ya + (1 - lam.view(-1, 1)) * yb
    if a.dim() != 4:
        raise ConfigError(f"mix_method cutmix needs image inputs (N, C, H, W); got {tuple(a.shape)}")
    inputs, targets = torch.cat([a, b]), torch.cat([ya, yb])
    partner = torch.cat([torch.arange(len(b)) + len(a), torch.arange(len(a))]).to(a.device)
    lam = float(beta_sample(alpha))
    h, w = a.shape[2], a.shape[3]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    inputs = inputs.clone()
    inputs[:, :, y1:y2, x1:x2] = inputs[partner][:, :, y1:y2, x1:x2]
    kept = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return inputs, kept * targets + (1.0 - kept) * targets[partner]


def selective_pairs(outer: Tensor, inner: Tensor, size: int, per_pair: int = 1) -> list[tuple[Tensor, Tensor]]:
    """Index pairings in batch order: in each pass, for every value of ``outer`` with two or more values of ``inner``,
    two random distinct ``inner`` values and their examples paired up to the shorter list; passes repeat until the
    pairings give ``size`` mixed examples (``per_pair`` per pair: 2 for CutMix). Empty when no value has a pair."""
    members: list[list[Tensor]] = []
    for value in torch.unique(outer):
        inside = outer == value
        members.append([torch.nonzero(inside & (inner == v)).flatten() for v in torch.unique(inner[inside])])
    members = [lists for lists in members if len(lists) >= 2]
    if not members:
        return []
    pairs: list[tuple[Tensor, Tensor]] = []
    total = 0
    while total < size:
        for lists in members:
            first, second = (lists[int(i)] for i in torch.randperm(len(lists))[:2])
            n = min(len(first), len(second))
            pairs.append((first[:n], second[:n]))
            total += per_pair * n
    return pairs


def selective_mix(
    x: Tensor, onehot: Tensor, outer: Tensor, inner: Tensor, alpha: float, method: str
) -> tuple[Tensor, Tensor]:
    """Mix, within each value of ``outer``, the examples of two random distinct values of ``inner``
    (:func:`selective_pairs`), shuffle and cut to the batch size; ``(x, onehot)`` unchanged when no value of
    ``outer`` has two values of ``inner``. Mixup draws one weight per pair; CutMix one box per pairing."""
    pairs = selective_pairs(outer, inner, len(x), per_pair=2 if method == "cutmix" else 1)
    if not pairs:
        return x, onehot
    if method == "mixup":  # one λ per pair: draw the kept pairs first and mix only those
        first, second = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        keep = torch.randperm(len(first))[: len(x)].to(first.device)
        first, second = first[keep], second[keep]
        return mix_pair(x[first], x[second], onehot[first], onehot[second], alpha, method)
    parts = [mix_pair(x[i], x[j], onehot[i], onehot[j], alpha, method) for i, j in pairs]
    mixed_x, mixed_y = torch.cat([m for m, _ in parts]), torch.cat([t for _, t in parts])
    order = torch.randperm(len(mixed_x))[: len(x)].to(x.device)
    return mixed_x[order], mixed_y[order]


@dataclass
class LISAHparams(MixHparams):
    """LISA: ``p_sel`` (probability of intra-label mixing), ``alpha`` (Beta(α, α)), ``mix_method`` (``mixup`` or
    ``cutmix`` for images), ``mix_on`` (inputs or features), ``group_balanced`` (group-balanced sampling)."""

    alpha: float = bounded(2.0, POSITIVE, "the Beta(α, α) concentration")
    p_sel: float = 0.5
    mix_method: str = one_of("mixup", MIX_METHODS)
    group_balanced: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.p_sel <= 1.0:
            raise ConfigError(f"p_sel {self.p_sel!r} must be a probability in [0, 1]")
        if self.mix_method == "cutmix" and self.mix_on == "features":
            raise ConfigError("mix_method cutmix cuts image boxes; it cannot mix features (use mix_method=mixup)")


@register_method("lisa")
class LISA(OneStage):
    """Selective mixup: within a label across attributes (probability p_sel), else within an attribute across labels."""

    summary = "selective mixup: same label across attributes, or same attribute across labels (Yao et al. 2022)"
    family = "augmentation"
    Hparams = LISAHparams
    requires = Requirements(train_attrs=True)
    #: searched by `debiaslab tune`: SubpopBench's ranges, α 10^U(−1, 1) and p_sel U(0, 1)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "alpha": loguniform(0.1, 10.0), "p_sel": uniform(0.0, 1.0)}
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "alpha": Default(2.0, f"{LISA_CODE}: --mix_alpha 2; {SUBPOP_REGISTRY}: LISA_alpha 2"),
            "p_sel": Default(0.5, f"{LISA_CODE}: --mix_ratio 0.5; {SUBPOP_REGISTRY}: LISA_p_sel 0.5"),
            "mix_method": Default("mixup", f"{SUBPOP_REGISTRY}: LISA_mixup_method mixup"),
            "group_balanced": Default(True, f"{LISA_CODE}: one loader per group, a batch from each every step"),
        },
        "waterbirds": {
            "lr": Default(1e-3, LISA_README_CUB),
            "weight_decay": Default(1e-4, LISA_README_CUB),
            "batch_size": Default(64, LISA_README_CUB),
            "epochs": Default(300, LISA_README_CUB),
        },
        "celeba": {
            "lr": Default(1e-4, LISA_README_CELEBA),
            "weight_decay": Default(1e-4, LISA_README_CELEBA),
            "batch_size": Default(64, LISA_README_CELEBA),
            "epochs": Default(50, LISA_README_CELEBA),
            "mix_method": Default("cutmix", LISA_README_CELEBA),
        },
    }

    def sampler(self, train: GroupDataset) -> Sampler:
        if self.hparams.group_balanced:
            return group_balanced_sampler(train.group, train.n_groups, num_samples=len(train))
        return UniformSampler(len(train))

    def loss_fn(self, model: nn.Module, train: GroupDataset, device: torch.device) -> LossFn:
        hp: LISAHparams = self.hparams  # type: ignore[assignment]
        n_classes = train.n_classes

        def loss(batch: Batch, ctx: StepContext) -> Tensor:
            inputs, rest = mixable(model, batch.x, hp.mix_on)
            onehot = F.one_hot(batch.y, n_classes).to(inputs.dtype if inputs.is_floating_point() else torch.float32)
            if float(torch.rand(())) <= hp.p_sel:  # same label, across attribute values
                mixed, targets = selective_mix(inputs, onehot, batch.y, batch.attr, hp.alpha, hp.mix_method)
            else:  # same attribute value, across labels
                mixed, targets = selective_mix(inputs, onehot, batch.attr, batch.y, hp.alpha, hp.mix_method)
            return F.cross_entropy(rest(mixed), targets)

        return loss
