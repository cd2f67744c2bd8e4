"""AFR, Automatic Feature Reweighting (Qiu, Potapczynski, Izmailov, Wilson; ICML 2023): re-train the last layer on
held-out training data, upweighting the examples the ERM model gets wrong; no group labels in training.

1. ERM on the training set without a held-out part (``heldout_fraction``, 20 % in the paper: ``--train_prop=80``),
   kept at its last epoch.
2. On the held-out part, each example gets weight ``exp(−γ p̂_y(x))`` with ``p̂_y`` the ERM model's probability of
   the true class, class-balanced (each class's weights scaled by ``1/n_y``) and normalised to sum to 1.
3. The last layer, started at the ERM head ``(W₀, b₀)``, minimises ``Σ_i w_i CE_i + λ (‖W − W₀‖² + ‖b − b₀‖²)`` by
   full-batch SGD without momentum, gradients clipped at norm 1, the epoch chosen on validation (the official
   notebooks' early stopping by validation worst-group accuracy; here the method's selection rule).

Settings from the official code (AndPotap/afr: README.md commands, losses/__init__.py ``get_exp_weights``,
utils/supervised_utils.py ``rebalance_weights`` and ``take_step``, notebooks/wb_celeba.ipynb grids for γ and λ). The
held-out part is a seeded random 20 % here (the official split takes the last 20 % of the training file). Group
labels are used only by the selection rule, when validation has them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.sampling import UniformSampler
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods.base import FitResult
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.last_layer import LastLayer
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, categorical, uniform
from debiaslab.methods.stages import method_stage
from debiaslab.models.base import Backbone

AFR_README = "AFR official code (AndPotap/afr, README.md)"
AFR_WB = f"{AFR_README}, Waterbirds commands"
AFR_CELEBA = f"{AFR_README}, CelebA commands"
AFR_ARGS = "AFR official code (AndPotap/afr, utils/common_utils.py and train_embeddings.py)"


def afr_weights(logits: Tensor, y: Tensor, gamma: float, n_classes: int, balance_classes: bool = True) -> Tensor:
    """``exp(−γ p̂_y)`` per example, each class scaled by ``1/n_y`` when ``balance_classes``, normalised to sum 1."""
    p_true = torch.softmax(logits.float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    weights = torch.exp(-gamma * p_true)
    if balance_classes:
        counts = torch.bincount(y, minlength=n_classes).to(weights.dtype)
        weights = weights / counts[y]
    return weights / weights.sum()


@dataclass
class AFRHparams(TrainHparams):
    """AFR: the training fields configure the first-stage ERM; ``heldout_fraction`` of the training set is kept for
    the last layer, trained ``head_epochs`` full-batch SGD steps at ``head_lr`` (gradient norm clipped at
    ``head_grad_clip``) with weights ``exp(−gamma p̂_y)`` (``balance_classes``) and L2 pull ``reg_coeff`` (λ) to the
    ERM head."""

    heldout_fraction: float = 0.2
    gamma: float = 10.0
    reg_coeff: float = 0.0
    balance_classes: bool = True
    head_epochs: int = 500
    head_lr: float = 0.01
    head_grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction {self.heldout_fraction!r} must be in (0, 1)")
        if not self.gamma >= 0:
            raise ConfigError(f"gamma {self.gamma!r} must be >= 0 (0: class-balanced uniform weights)")
        if not self.reg_coeff >= 0:
            raise ConfigError(f"reg_coeff {self.reg_coeff!r} must be >= 0")
        if self.head_epochs < 1:
            raise ConfigError(f"head_epochs {self.head_epochs} must be >= 1")
        if not self.head_lr > 0:
            raise ConfigError(f"head_lr {self.head_lr!r} must be > 0")


@register_method("afr")
class AFR(LastLayer):
    """Automatic feature reweighting: ERM on most of the training set, then its last layer re-trained on the rest with
    weights ``exp(−γ p̂_y)``."""

    summary = "ERM on 80 % of training; last layer re-fitted on the rest, weights exp(−γ p̂_y) (Qiu et al. 2023)"
    Hparams: ClassVar[type[TrainHparams]] = AFRHparams
    run_inputs: ClassVar[frozenset[str]] = frozenset()  # the base model must not have seen the held-out part
    head_name: ClassVar[str] = "afr"
    #: searched by `debiaslab tune`: the first stage's lr and weight decay, γ and λ over the official notebooks' grids
    #: (Waterbirds γ 4..20, λ 0..0.3; CelebA γ 1..3, λ 10^-3..10^-1)
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "gamma": uniform(1.0, 20.0),
        "reg_coeff": categorical(0.0, 0.001, 0.01, 0.1, 0.2, 0.3),
    }
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "heldout_fraction": Default(0.2, f"{AFR_README}: first stage --train_prop=80, second --train_prop=-20"),
            "gamma": Default(10.0, f"{AFR_WB}: --gamma=10"),
            "reg_coeff": Default(0.0, f"{AFR_WB}: --reg_coeff=0.0"),
            "balance_classes": Default(True, f"{AFR_ARGS}: --rebalance_weights True"),
            "head_epochs": Default(500, f"{AFR_WB}: --num_epochs=500 full-batch steps (--emb_batch_size=-1)"),
            "head_lr": Default(0.01, f"{AFR_WB}: --init_lr=0.01, sgd_optimizer, --momentum=0., constant lr"),
            "head_grad_clip": Default(1.0, f"{AFR_WB}: --grad_norm=1.0"),
        },
        "waterbirds": {
            "epochs": Default(50, f"{AFR_WB}: first stage --num_epochs=50"),
            "batch_size": Default(32, f"{AFR_WB}: first stage --batch_size=32"),
            "optimizer": Default("sgd", f"{AFR_WB}: first stage sgd_optimizer"),
            "lr": Default(3e-3, f"{AFR_WB}: first stage --init_lr=0.003, constant_lr_scheduler"),
            "weight_decay": Default(1e-4, f"{AFR_WB}: first stage --weight_decay=1e-4"),
            "scheduler": Default("none", f"{AFR_WB}: first stage constant_lr_scheduler"),
        },
        "celeba": {
            "epochs": Default(20, f"{AFR_CELEBA}: first stage --num_epochs=20"),
            "batch_size": Default(100, f"{AFR_CELEBA}: first stage --batch_size=100"),
            "optimizer": Default("sgd", f"{AFR_CELEBA}: first stage sgd_optimizer"),
            "lr": Default(3e-3, f"{AFR_CELEBA}: first stage --init_lr=3e-3"),
            "weight_decay": Default(1e-4, f"{AFR_CELEBA}: first stage --weight_decay=1e-4"),
            "scheduler": Default("cosine", f"{AFR_CELEBA}: first stage cosine_lr_scheduler"),
            "gamma": Default(1.44, f"{AFR_CELEBA}: --gamma=1.44"),
            "reg_coeff": Default(0.001, f"{AFR_CELEBA}: --reg_coeff=0.001"),
            "head_epochs": Default(1000, f"{AFR_CELEBA}: --num_epochs=1000"),
            "head_lr": Default(0.02, f"{AFR_CELEBA}: --init_lr=0.02"),
        },
    }

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: AFRHparams = self.hparams  # type: ignore[assignment]
        trainer.seed_stage("afr_split")
        order = torch.randperm(len(train))
        n_held = max(1, round(hp.heldout_fraction * len(train)))
        held, kept = torch.sort(order[:n_held]).values, torch.sort(order[n_held:]).values
        if kept.numel() == 0:
            raise ConfigError(f"afr: heldout_fraction {hp.heldout_fraction} leaves no example for the ERM stage")
        model, spec, stages = self.base_model(train.subset(kept), val, trainer)
        self._sizes = {"erm_examples": int(kept.numel()), "heldout_examples": int(held.numel())}
        return self.fit_head(model, spec, stages, train.subset(held), val, trainer)

    def new_head(self, model: Backbone) -> nn.Linear:
        """AFR starts from the ERM head."""
        return copy.deepcopy(model.head).requires_grad_(True)

    def head_stage(self, head: nn.Linear, train: GroupDataset, rule: str, trainer: Trainer) -> Stage:
        hp: AFRHparams = self.hparams  # type: ignore[assignment]
        w0, b0 = head.weight.detach().clone().to(trainer.device), head.bias.detach().clone().to(trainer.device)
        assert train.x is not None  # embeddings live in memory
        with torch.no_grad():
            logits = train.x @ head.weight.detach().t().cpu() + head.bias.detach().cpu()
        weights = afr_weights(logits, train.y, hp.gamma, train.n_classes, hp.balance_classes)
        self._weights = weights
        table = weights.to(trainer.device)

        def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
            ce = F.cross_entropy(head(batch.x), batch.y, reduction="none")
            fit = (table[batch.index.to(table.device)].to(ce.dtype) * ce).sum()
            reg = (head.weight - w0).pow(2).sum() + (head.bias - b0).pow(2).sum()
            return {"loss": fit + hp.reg_coeff * reg, "weighted_ce": fit.detach(), "reg": reg.detach()}

        optim = hp.optim_config(
            optimizer="sgd",
            lr=hp.head_lr,
            momentum=0.0,
            weight_decay=0.0,
            scheduler="none",
            grad_clip=hp.head_grad_clip,
        )
        return method_stage(
            self,
            self.head_name,
            train,
            rule,
            modules=head,
            loss_fn=loss,
            predict_fn=head,
            sampler=UniformSampler(len(train), shuffle=False),
            epochs=hp.head_epochs,
            batch_size=len(train),
            optim=optim,
            sparsity=None,
        )

    def head_extras(self, train: GroupDataset) -> dict[str, Any]:
        weights = self._weights
        extras: dict[str, Any] = {**self._sizes, "weight_ess": float(weights.sum() ** 2 / (weights**2).sum())}
        if train.has_attrs and train.aligned_groups:
            extras["conflicting_weight_share"] = float(weights[~train.is_aligned].sum())
            extras["conflicting_share"] = float((~train.is_aligned).float().mean())
        return extras
