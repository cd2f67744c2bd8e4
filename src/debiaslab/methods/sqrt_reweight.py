"""Square-root reweighting: loss weights ∝ ``n^{−1/2}`` per group or class, SubpopBench's ``SqrtReWeight``.

The milder sibling of inverse-frequency reweighting (:mod:`debiaslab.methods.reweight`, ``power = 1``): rare groups
count more, but not as much as the frequent ones together. The weights are normalised to mean 1 over the training
set like every reweighting here (SubpopBench normalises them to sum to the number of groups; only the loss scale
differs). ``sqrt_reweight_group`` needs training attributes; ``sqrt_reweight_class`` needs none.
"""

from __future__ import annotations

from typing import ClassVar

from debiaslab.methods.hparams import Default, HparamTable
from debiaslab.methods.presets import SUBPOP_ALGORITHMS
from debiaslab.methods.registry import register_method
from debiaslab.methods.reweight import ReweightClass, ReweightGroup
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace

_SQRT: HparamTable = {"*": {"power": Default(0.5, f"{SUBPOP_ALGORITHMS}: SqrtReWeight, weights 1/sqrt(n_g)")}}


@register_method("sqrt_reweight_group")
class SqrtReweightGroup(ReweightGroup):
    """Group loss weights ``∝ 1/sqrt(n_g)``."""

    summary = "loss weights ∝ 1/sqrt(n_g) (needs training groups)"
    #: searched by `debiaslab tune`: lr and weight decay; the exponent stays 1/2 (reweight_group searches it)
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    hparam_table: ClassVar[HparamTable] = _SQRT


@register_method("sqrt_reweight_class")
class SqrtReweightClass(ReweightClass):
    """Class loss weights ``∝ 1/sqrt(n_y)``."""

    summary = "loss weights ∝ 1/sqrt(n_y) (labels only)"
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    hparam_table: ClassVar[HparamTable] = _SQRT
