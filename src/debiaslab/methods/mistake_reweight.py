"""Mistake reweighting: a teacher trained beside an ERM student, with its cross-entropy up-weighted on the
examples the student currently gets wrong. No input gradient is used.

The teacher minimises CE(T(x), y) + λ · mean_i w_i · CE(T(x_i), y_i), w_i ∝ 1[S(x_i) ≠ y_i] normalised to mean 1
over the batch (or a record of past mistakes, see :class:`~debiaslab.methods.ule.MistakeMemory`); the student is
ERM, by default with L2 weight decay on Colored MNIST so that it keeps the colour rule and keeps making its
mistakes on the conflicting images (an unregularised student memorises them within a few epochs and the weights
vanish). The teacher is deployed.

It shares ULE's two-network engine (:mod:`debiaslab.methods.ule`) but is not ULE: ULE's teacher learns from the
student's input gradient. On Colored MNIST (validation unbiased accuracy, 30-epoch probes at 1 % and 5 %) this
scheme with a weight-decayed student scored above every gradient reading measured then; the probes' run records
and the full-budget rows are on the results pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.evaluation.health import Check
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams, one_of
from debiaslab.methods.premises import error_set_health, predictions
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, categorical, loguniform
from debiaslab.methods.ule import STUDENT_LOSSES, ULE, WEIGHTINGS, ULEHparams

OURS = (
    "ours: Colored MNIST probes (1 % and 5 %, seed 0, validation unbiased accuracy; run records "
    "benchmarks/results/cmnist-2026-11-24/ule-tune and ule-cand)"
)
STUDENT_WD = (
    "ours: Colored MNIST probe (1 % and 5 %, seed 0, 30 epochs, validation; benchmarks/results/cmnist-2026-11-24/"
    "ule-swd): with L2 0.01 the ERM student keeps the colour rule and its mistakes"
)


@dataclass
class MistakeReweightHparams(ULEHparams):
    """ULE's hyperparameters with Ω fixed to ``reweight`` (the teacher's CE on the student's mistakes)."""

    allowed_omegas: ClassVar[tuple[str, ...]] = ("reweight",)

    omega: str = "reweight"
    omega_weight: float = 5.0
    weighting: str = one_of("student_wrong", WEIGHTINGS)


@register_method("mistake_reweight")
class MistakeReweight(ULE):
    """A teacher whose CE is up-weighted on a parallel ERM student's current mistakes; no input gradient."""

    summary = "teacher CE up-weighted on a parallel ERM student's mistakes (no input gradient)"
    Hparams: ClassVar[type[TrainHparams]] = MistakeReweightHparams
    #: searched by `debiaslab tune`: λ, the weighting of the student's mistakes (not ``uniform``: with
    #: ``reweight`` it only rescales the CE), the student's loss and L2
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "omega_weight": loguniform(0.1, 100.0),
        "weighting": categorical(*(w for w in WEIGHTINGS if w != "uniform")),
        "student_loss": categorical(*STUDENT_LOSSES),
        "student_weight_decay": loguniform(1e-6, 1e-1),
    }
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "omega_weight": Default(5.0, OURS),
            "weighting": Default("student_wrong", OURS),
        },
        "colored_mnist": {**CMNIST_MLP, "student_weight_decay": Default(0.01, STUDENT_WD)},
    }

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also (beside ULE's student checks): the student's mistakes on the training set at the kept epoch,
        the set the teacher's CE is up-weighted on: non-empty, a minority, spread over classes."""
        trainer = trainer or Trainer(progress=False)
        checks = super().health(train, val, trainer)
        if self.student_ is not None:
            errors = torch.nonzero(predictions(trainer, self.student_, train) != train.y).flatten()
            checks += error_set_health(errors, train, "student errors")
        return checks
