"""REST — reweighted sparse training (Zhao, Yin et al., ECML-PKDD 2023).

One stage: a network trained with dynamic sparse training (:mod:`debiaslab.engine.sparse`: ERK masks at
``density``, RigL drop/regrow every ``sparse_update_every`` steps) on a sampler that draws each bias-conflicting
example with probability ∝ ``lambda_up`` and every other one ∝ 1 (with replacement, ``n`` draws per epoch), as the
release's ``WeightedRandomSampler`` does.

- ``rest``: "conflicting" from the ground-truth attributes of the training split (the release; needs them).
- ``rest_free``: label-free; "conflicting" is the error set of an ERM model trained ``identify_epochs`` epochs
  (as JTT finds it), then the sparse reweighted stage.

``lambda_up`` defaults to 80, the weight the release hard-codes in its training loader (its
``--lambda_upweight`` flag, and the README's per-ratio values 10/30/50/80 for 0.5/1/2/5 % passed to it, are never
read). ``lambda_up=by_ratio`` takes those README values for the training split's measured conflicting ratio
instead (Colored MNIST and Corrupted CIFAR-10). The README's commands as printed also omit ``--reweight_groups``,
the flag that turns that loader's weighting on; here the upweighting always runs. The fitted result reports the
measured cost (non-zero parameters, inference and training multiply-adds against dense, checkpoint sizes) in
``extras["cost"]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.engine.cost import run_cost
from debiaslab.engine.sampling import WeightedSampler
from debiaslab.engine.stage import Stage, StageResult
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check, weight_checks
from debiaslab.methods.base import FitResult, Method, Requirements
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.premises import error_set_health
from debiaslab.methods.presets import DATASET_PRESETS, OURS_CMNIST_SELECTION
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, intrange, loguniform, uniform
from debiaslab.methods.stages import error_set, error_set_quality, log_error_set, method_ce_stage

log = logging.getLogger(__name__)

REST_README = "REST release (zhao1402072392/REST) README commands"
REST_CODE = "REST release (zhao1402072392/REST): train.py / sparselearning/core.py"
REST_LOADER = (
    "REST release (zhao1402072392/REST, commit a60e6c7): data/dro_dataset.py get_loader gives conflicting examples "
    "(group 0) weight 80, hard-coded; run_expt.py parses --lambda_upweight but never reads it"
)
#: the ``lambda_up`` value that selects the README's per-ratio table
BY_RATIO = "by_ratio"
OURS_DENSITY = "ours: one point of the release's density sweep (0.0005 ... 0.9)"

#: the values the release README passes to its (unread) --lambda_upweight flag, per conflicting ratio of Colored
#: MNIST and Corrupted CIFAR-10; used with ``lambda_up=by_ratio``
CMNIST_LAMBDA_UP: dict[float, float] = {0.005: 10.0, 0.01: 30.0, 0.02: 50.0, 0.05: 80.0}
#: datasets whose README commands give the per-ratio values
BY_RATIO_DATASETS = ("colored_mnist", "corrupted_cifar10")
#: a measured ratio matches a known one when within this relative distance
RATIO_TOLERANCE = 0.1


@dataclass
class RESTHparams(TrainHparams):
    """REST's hyperparameters on top of the usual ones (``density`` and ``sparse_*`` are every method's).

    Attributes:
        lambda_up: sampling weight of a bias-conflicting example (others: 1); ``by_ratio``: the release README's
            value for the measured conflicting ratio (Colored MNIST, Corrupted CIFAR-10).
        identify_epochs: ``rest_free`` only: epochs of the ERM whose errors are taken as "conflicting".
    """

    lambda_up: float | str = 80.0
    identify_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda_up != BY_RATIO:
            ok = isinstance(self.lambda_up, int | float) and not isinstance(self.lambda_up, bool)
            if not ok or not float(self.lambda_up) > 0:
                raise ConfigError(
                    f"lambda_up {self.lambda_up!r} must be > 0 (sampling weight of conflicting examples) "
                    f"or {BY_RATIO!r}"
                )
            self.lambda_up = float(self.lambda_up)
        if int(self.identify_epochs) != self.identify_epochs or self.identify_epochs < 1:
            raise ConfigError(f"identify_epochs {self.identify_epochs!r} must be an integer >= 1")
        self.identify_epochs = int(self.identify_epochs)


def lambda_for_ratio(ratio: float) -> float | None:
    """The release's λ_up for a Colored MNIST conflicting ratio within :data:`RATIO_TOLERANCE` of a known one."""
    for known, lam in CMNIST_LAMBDA_UP.items():
        if abs(ratio - known) <= RATIO_TOLERANCE * known:
            return lam
    return None


def upweight_probabilities(conflicting: Tensor, lambda_up: float) -> Tensor:
    """Per-example draw probability: ∝ ``lambda_up`` for conflicting examples, ∝ 1 otherwise (sums to 1)."""
    weights = torch.where(conflicting.to(torch.bool), float(lambda_up), 1.0).to(torch.float64)
    return weights / weights.sum()


def rest_sampler(conflicting: Tensor, lambda_up: float) -> WeightedSampler:
    """``n`` draws with replacement per epoch with :func:`upweight_probabilities` (the release's sampler)."""
    return WeightedSampler(upweight_probabilities(conflicting, lambda_up), num_samples=conflicting.numel())


OURS_GENERIC = (
    "ours: on a dataset without a preset (a user's .npz of 6,000 MNIST digits with a planted shortcut, 5 %-dense "
    "MLP, validation accuracy) the release's SGD lr 1e-3 kept the training loss at log K for 8 epochs, dense too "
    "(the MLP has no normalisation layers; the release's networks do); Adam lr 1e-3 reached 79 % after 20 epochs "
    "(32 % with a plateau schedule on worst-group accuracy, which sat at 0 and cut the lr), Adam lr 3e-3 60 % after "
    "5 and 93 % after 20"
)
OURS_IDENTIFY = (
    "ours: a 5 %-dense network needs more than one epoch to learn the majority rule: on a user's .npz of 2,000 MNIST "
    "digits with a planted shortcut its one-epoch error set held 78 % of the training set, its ten-epoch one 1.8 % "
    "(94 % of them bias-conflicting)"
)
OURS_ONE_EPOCH = (
    "ours: one identification epoch, as JTT's (on Biased MNIST its errors are exactly the bias-conflicting images)"
)
#: the release's training recipe (ResNets and CNNs with BatchNorm) and one identification epoch, kept for every
#: dataset with a preset
_RELEASE_OPTIM: dict[str, Default] = {
    "identify_epochs": Default(1, OURS_ONE_EPOCH),
    "optimizer": Default("sgd", REST_CODE),
    "momentum": Default(0.9, REST_CODE),
    "lr": Default(1e-3, REST_README + " (CIFAR-10-C, BFFHQ)"),
    "scheduler": Default("plateau", REST_CODE + " (ReduceLROnPlateau on validation; ours: on the selection score)"),
}
_STAR: dict[str, Default] = {
    "lambda_up": Default(80.0, REST_LOADER),
    "optimizer": Default("adam", OURS_GENERIC),
    "lr": Default(3e-3, OURS_GENERIC),
    "scheduler": Default("none", OURS_GENERIC),
    "identify_epochs": Default(10, OURS_IDENTIFY),
    "weight_decay": Default(0.0, REST_README),
    "batch_size": Default(256, REST_README),
    "epochs": Default(100, REST_README),
    "lr_patience": Default(5, REST_CODE),
    "lr_gamma": Default(0.1, REST_CODE),
    "density": Default(0.05, OURS_DENSITY),
    "sparse_init": Default("erk", REST_CODE),
    "sparse_update_every": Default(1000, REST_README),
    "sparse_drop_fraction": Default(0.5, REST_CODE),
    "sparse_end_fraction": Default(1.0, REST_CODE + " (cosine over all iterations, updates until the end)"),
}
_CMNIST: dict[str, Default] = {
    "model": Default("cnn_rest", REST_README + " (--model CNN: simple_model.py)"),
    "lr": Default(1e-2, REST_README),
    "selection": Default("val_unbiased", OURS_CMNIST_SELECTION),
}
#: every dataset with a training preset keeps the release's optimiser; the ``"*"`` row is for the others
_TABLE: HparamTable = {
    "*": dict(_STAR),
    **{dataset: dict(_RELEASE_OPTIM) for dataset in DATASET_PRESETS},
    "colored_mnist": {**_RELEASE_OPTIM, **_CMNIST},
}


class _RESTBase(Method):
    """Shared fit: find the conflicting examples, then one sparse stage with the upweighting sampler."""

    family = "sparse training"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    #: searched by `debiaslab tune`: the density of the sparse network, λ_up, and (rest_free) the identification
    #: epochs
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "density": uniform(0.05, 0.5),
        "lambda_up": loguniform(1.0, 200.0),
        "identify_epochs": intrange(1, 5),
    }
    Hparams: ClassVar[type[TrainHparams]] = RESTHparams
    hparam_table: ClassVar[HparamTable] = _TABLE

    #: whether the upweighted set is found without attribute labels (then it is scored against them)
    label_free: ClassVar[bool] = False

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        self.upweighted_: Tensor | None = None
        self.draw_probabilities_: Tensor | None = None

    def conflicting(self, train: GroupDataset, trainer: Trainer) -> tuple[Tensor, list[StageResult], dict[str, Any]]:
        """Boolean per training example, the stages that found it, and what to report about it."""
        raise NotImplementedError

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the upweighted set is non-empty, a minority, spread over classes (label-free: scored against the
        bias-conflicting examples), and the effective sample size of the sampler's draw probabilities."""
        checks = super().health(train, val, trainer)
        if self.upweighted_ is not None:
            errors = torch.nonzero(self.upweighted_).flatten()
            checks += error_set_health(errors, train, "upweighted set", labelled=self.label_free)
        if self.draw_probabilities_ is not None:
            checks += weight_checks(self.draw_probabilities_, None, "draw probabilities")
        return checks

    def resolve_lambda(self, train: GroupDataset) -> tuple[float, str]:
        """``lambda_up`` and where it comes from: the hyperparameter, or (``by_ratio``) the README's value for the
        measured conflicting ratio."""
        hp: RESTHparams = self.hparams  # type: ignore[assignment]
        if hp.lambda_up != BY_RATIO:
            return float(hp.lambda_up), self.hparam_sources.get("lambda_up", "user")
        ratio = float((~train.is_aligned).float().mean()) if train.has_attrs and train.aligned_groups else None
        lam = lambda_for_ratio(ratio) if self.dataset in BY_RATIO_DATASETS and ratio is not None else None
        if lam is None:
            known = ", ".join(f"{r:g}: {v:g}" for r, v in CMNIST_LAMBDA_UP.items())
            where = f"{self.dataset or 'this dataset'}" + (
                f" at conflicting ratio {ratio:.4f}" if ratio is not None else ""
            )
            raise ConfigError(
                f"{self.name}: lambda_up={BY_RATIO} has no value for {where}; pass a number, e.g. --hp lambda_up=80 "
                f"(the README's Colored MNIST / Corrupted CIFAR-10 values by ratio: {known})"
            )
        return lam, f"REST release README (lambda_up={BY_RATIO}), for the measured conflicting ratio {ratio:.4f}"

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        rule = self.selection_rule(val)
        lambda_up, lambda_source = self.resolve_lambda(train)  # fails before any training
        conflicting, stages, info = self.conflicting(train, trainer)
        sampler = rest_sampler(conflicting, lambda_up)
        self.upweighted_, self.draw_probabilities_ = conflicting, upweight_probabilities(conflicting, lambda_up)

        def build() -> Stage:
            model = self.build_model(train)
            return method_ce_stage(self, "rest", model, train, rule, sampler=sampler)

        final, result = trainer.run_stage("rest", build, train, val)
        stages = [*stages, result]
        n_conf = int(conflicting.sum())
        extras: dict[str, Any] = {
            "lambda_up": lambda_up,
            "lambda_up_source": lambda_source,
            "n_upweighted": n_conf,
            "upweighted_fraction": n_conf / max(len(train), 1),
            "upweighted_draw_share": float(upweight_probabilities(conflicting, lambda_up)[conflicting].sum()),
            **info,
        }
        # REST's sampler draws len(train) examples per epoch: that counts a dense stage's training cost too
        dense_examples = {s.name: len(train) * len(s.history) for s in stages}
        extras["cost"] = run_cost(final.modules, train.input_shape, stages, dense_examples)
        return self.fit_result(train, final.modules, stages, rule, extras)


@register_method("rest")
class REST(_RESTBase):
    """Sparse training + upweighting of the bias-conflicting examples given by the training attributes."""

    final_stage = ("rest", None)

    summary = "dynamic sparse training + upweighted bias-conflicting examples (Zhao et al. 2023)"
    requires = Requirements(train_attrs=True)

    def conflicting(self, train: GroupDataset, trainer: Trainer) -> tuple[Tensor, list[StageResult], dict[str, Any]]:
        return ~train.is_aligned, [], {"conflicting_from": "attributes"}


@register_method("rest_free")
class RESTFree(_RESTBase):
    """Label-free REST: an ERM model's training errors stand in for the bias-conflicting examples."""

    earlier_stages = (("identify", "identify_epochs", None, False),)
    final_stage = ("rest", None)

    summary = "REST with an ERM error set as the conflicting examples (no training labels)"
    label_free: ClassVar[bool] = True

    def conflicting(self, train: GroupDataset, trainer: Trainer) -> tuple[Tensor, list[StageResult], dict[str, Any]]:
        hp: RESTHparams = self.hparams  # type: ignore[assignment]

        def build() -> Stage:
            return method_ce_stage(self, "identify", self.build_model(train), train, "last", epochs=hp.identify_epochs)

        stage, identify = trainer.run_stage("identify", build, train, None)
        errors = error_set(trainer, stage.predict_fn, train, stage.modules)
        quality = error_set_quality(train, errors)
        log_error_set(log, self.name, errors, len(train), f"{hp.identify_epochs} epochs", quality)
        conflicting = torch.zeros(len(train), dtype=torch.bool)
        conflicting[errors] = True
        return (
            conflicting,
            [identify],
            {"conflicting_from": "error_set", "identify_epochs": hp.identify_epochs, **quality},
        )
