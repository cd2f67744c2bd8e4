"""Loss reweighting, balanced resampling and subsampling, by group or by class.

The classic baselines for spurious correlations: make every group (class x attribute) -- or every class --
count equally, either through per-example loss weights, through the sampler, or by discarding examples of the
larger groups. Sagawa et al. (ICLR 2020) use group reweighting as their main baseline; Idrissi et al. (CLeaR
2022, "Simple data balancing achieves competitive worst-group-accuracy") show subsampling and reweighting by
group (SUBG, RWG) or class (SUBY, RWY) are strong.

One class, :class:`Balancing`, parameterised by ``by`` (``group`` | ``class``) and ``scheme``
(``reweight`` | ``resample`` | ``subsample``); the six registered methods are thin subclasses. Everything runs
through the engine's one cross-entropy stage: only its ``sampler`` or ``example_weights`` change.

Empty groups (n_g = 0) are harmless everywhere: weights and sampling probabilities are only ever looked up for
examples that exist, and subsampling keeps ``min`` over the *non-empty* groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import (
    IndexListSampler,
    Sampler,
    WeightedSampler,
    inverse_frequency_weights,
    subsample_groups,
)
from debiaslab.engine.stage import Stage
from debiaslab.engine.trainer import Trainer
from debiaslab.evaluation.health import Check, weight_checks
from debiaslab.methods.base import FitResult, Method, Requirements
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, uniform
from debiaslab.methods.stages import method_ce_stage

log = logging.getLogger(__name__)

By = Literal["group", "class"]
Scheme = Literal["reweight", "resample", "subsample"]

POWER_SOURCE = "spec (methods.md): w ∝ 1/n^power, power 1 = inverse frequency, 0.5 = 1/sqrt(n) variant"


@dataclass
class ReweightHparams(TrainHparams):
    """Loss reweighting: example weight ∝ ``1 / n^power`` (1.0: inverse frequency, 0.5: inverse square root)."""

    power: float = bounded(1.0, NON_NEGATIVE, "1.0: 1/n, 0.5: 1/sqrt(n), 0: plain ERM")


#: the reweighting schemes search the exponent of their loss weights beside lr and weight decay
REWEIGHT_SPACE: SearchSpace = {**COMMON_SPACE, "power": uniform(0.0, 1.0)}


class Balancing(Method):
    """Balance groups or classes by loss weights, by resampling, or by subsampling, then train with CE.

    - ``reweight``: per-example loss weight ``w_i ∝ 1/n_{k(i)}^power``, normalised to mean 1 over the training
      set (so the learning rate keeps its meaning); every example visited once per epoch.
    - ``resample``: each epoch draws ``n`` examples with replacement, ``P(i) ∝ 1/n_{k(i)}`` (each group or
      class equally likely per draw).
    - ``subsample``: keep ``min_k n_k`` random examples of every non-empty group/class once, then plain ERM.

    Here ``k(i)`` is example i's group (``by="group"``, needs training attributes) or class (``by="class"``).
    The subsample is drawn inside the stage's build function from torch's global RNG, which the Trainer seeds
    per (run seed, stage): the same seed gives the same subsample, also when a run is resumed.
    """

    family = "balancing"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    #: searched by `debiaslab tune`: lr and weight decay; the reweighting schemes also their exponent (1/n^power)
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    by: ClassVar[By] = "group"
    scheme: ClassVar[Scheme] = "reweight"

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        #: what each training example counts for: loss weight, draw probability, or 1 kept / 0 left out
        self.example_weights_: Tensor | None = None

    # ------------------------------------------------------------------ what is balanced
    def balance_labels(self, train: GroupDataset) -> tuple[Tensor, int]:
        """The label every example is balanced on (group or class) and how many values it takes."""
        if self.by == "group":
            return train.group, train.n_groups
        return train.y, train.n_classes

    def example_weights(self, train: GroupDataset) -> Tensor:
        """Loss weights ``1/n^power`` per example, mean 1 over the training set (reweight scheme)."""
        labels, n_values = self.balance_labels(train)
        power = float(getattr(self.hparams, "power", 1.0))
        return inverse_frequency_weights(labels, n_values, power=power).to(torch.float32)

    def sampler(self, train: GroupDataset) -> Sampler | None:
        """The epoch sampler of the scheme (None: every example once, shuffled)."""
        labels, n_values = self.balance_labels(train)
        if self.scheme == "resample":
            return WeightedSampler(inverse_frequency_weights(labels, n_values), num_samples=len(train))
        if self.scheme == "subsample":
            seed = int(torch.randint(0, 2**62, (1,)).item())  # from the Trainer's per-stage seeding
            kept = subsample_groups(labels, n_values, torch.Generator().manual_seed(seed))
            log.info("%s: kept %d of %d training examples", self.name, kept.numel(), len(train))
            return IndexListSampler(kept)
        return None

    # ------------------------------------------------------------------ premise checks
    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the effective sample size of what each example counts for (loss weight, draw probability, or
        kept / not kept): a tiny group (class) makes a few examples carry the whole training signal."""
        checks = super().health(train, val, trainer)
        if self.example_weights_ is not None:
            checks += weight_checks(self.example_weights_, None, f"{self.scheme} weights")
        return checks

    # ------------------------------------------------------------------ fit
    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        rule = self.selection_rule(val)
        name = self.name
        # On the trainer's device: the stage looks weights up by each batch's index on the weights' device.
        weights = self.example_weights(train).to(trainer.device) if self.scheme == "reweight" else None
        extras: dict[str, object] = {"by": self.by, "scheme": self.scheme}

        self.example_weights_ = weights.cpu() if weights is not None else None

        def build() -> Stage:
            model = self.build_model(train)  # first, so initialisation does not depend on the scheme
            sampler = self.sampler(train)
            if isinstance(sampler, WeightedSampler):
                self.example_weights_ = sampler.weights.cpu()
            if isinstance(sampler, IndexListSampler):
                extras["n_kept"] = int(sampler.indices.numel())
                self.example_weights_ = torch.zeros(len(train)).index_fill_(0, sampler.indices.cpu(), 1.0)
            return method_ce_stage(self, name, model, train, rule, sampler=sampler, example_weights=weights)

        stage, result = trainer.run_stage(name, build, train, val)
        return self.fit_result(train, stage.modules, [result], rule, extras)


# ---------------------------------------------------------------------------------------------- tables
def _table(reweight: bool) -> HparamTable:
    star = {"power": Default(1.0, POWER_SOURCE)} if reweight else {}
    return {"*": star, "colored_mnist": dict(CMNIST_MLP)}


_GROUP_ATTRS = Requirements(train_attrs=True)


#: per scheme: the summary, with {k} the balanced label's letter (g or y), and the docstring's description
_SCHEMES: dict[str, tuple[str, str]] = {
    "reweight": (
        "loss weights ∝ 1/n_{k}^power",
        "loss reweighting: ``w_i ∝ 1/n_{{{k}(i)}}^power`` (Sagawa et al. 2020's reweighting baseline)",
    ),
    "resample": (
        "{by}-balanced sampling with replacement",
        "balanced resampling: draw ``i`` with probability ∝ ``1/n_{{{k}(i)}}``, with replacement",
    ),
    "subsample": (
        "keep min_{k} n_{k} examples per {by}, then ERM",
        "subsampling: ``min_{k} n_{k}`` random examples of each {by}, then ERM (SUBG / SUBY, Idrissi et al. 2022)",
    ),
}


def _variant(by: By, scheme: Scheme) -> type[Balancing]:
    """The :class:`Balancing` subclass balancing by ``by`` (group or class) with ``scheme``, registered as
    ``<scheme>_<by>`` (``reweight_group``)."""
    name, class_name = f"{scheme}_{by}", f"{scheme.capitalize()}{by.capitalize()}"
    k, needs = ("g", "needs training groups") if by == "group" else ("y", "labels only")
    summary, doc = (text.format(k=k, by=by) for text in _SCHEMES[scheme])
    attrs: dict[str, object] = {
        "__doc__": f"{by.capitalize()} {doc} ({needs}).",
        "__module__": __name__,
        "__qualname__": class_name,
        "summary": f"{summary} ({needs})",
        "by": by,
        "scheme": scheme,
        "hparam_table": _table(reweight=scheme == "reweight"),
    }
    if scheme == "reweight":
        attrs.update(Hparams=ReweightHparams, search_space=REWEIGHT_SPACE)
    if by == "group":
        attrs["requires"] = _GROUP_ATTRS
    return register_method(name)(type(class_name, (Balancing,), attrs))  # type: ignore[return-value]


ReweightGroup, ReweightClass = _variant("group", "reweight"), _variant("class", "reweight")
ResampleGroup, ResampleClass = _variant("group", "resample"), _variant("class", "resample")
SubsampleGroup, SubsampleClass = _variant("group", "subsample"), _variant("class", "subsample")
