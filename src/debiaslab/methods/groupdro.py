"""GroupDRO (Sagawa, Koh, Hashimoto, Liang; ICLR 2020): minimise the worst group's loss, online.

The adversary keeps weights ``q`` over groups and moves them towards the groups with the highest loss by an
exponentiated-gradient step; the model minimises the ``q``-weighted sum of per-group losses. Per step, on a
group-balanced minibatch:

    L_g = mean CE over the batch's examples of group g   (0 for groups absent from the batch)
    A_g = L_g + C / sqrt(n_g)                            (n_g: training count; C: generalisation adjustment)
    q_g <- q_g * exp(eta * A_g), then renormalise        (detached: q is not differentiated)
    loss = sum_g q_g * L_g                               (with the updated q)

``q`` starts uniform over the groups *present in the training set*; groups with ``n_g = 0`` get ``q = 0``
forever (their L_g is always 0, so under the paper's uniform start they would only dilute the weights of real
groups). ``q`` is a buffer of :class:`GroupDROWeights`, which sits in the stage's modules next to the network:
it is checkpointed, restored on resume and moved to the device with it. The deployed model is the network alone.

The paper's lesson -- strong L2 regularisation or early stopping is essential -- is left to ``weight_decay`` and
the selection rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.sampling import UniformSampler, group_balanced_sampler
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check, group_weight_check
from debiaslab.methods.base import FitResult, Method, Requirements
from debiaslab.methods.hparams import NON_NEGATIVE, Default, HparamTable, TrainHparams, bounded
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform
from debiaslab.methods.stages import method_stage
from debiaslab.utils import dist

log = logging.getLogger(__name__)

CODE = "GroupDRO official code default (kohpangwei/group_DRO, run_expt.py)"
PAPER_STRONG_L2 = (
    "GroupDRO paper (Sagawa et al. 2020), the strong-L2 group DRO models: lr 1e-5 with weight decay {wd} "
    "(the regularisation the paper finds essential), batch 128, {epochs} epochs"
)
STRONG_L2_WATERBIRDS = PAPER_STRONG_L2.format(wd="1.0 on Waterbirds", epochs=300)
STRONG_L2_CELEBA = PAPER_STRONG_L2.format(wd="0.1 on CelebA", epochs=50)
OURS_CMNIST = "ours: GroupDRO default kept, not tuned on Colored MNIST (the paper has no Colored MNIST run)"


def group_mean_losses(losses: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group mean of per-example ``losses`` (differentiable) and per-group counts in the batch.

    Groups absent from the batch get mean 0. ``groups`` must lie in ``[0, n_groups)`` (GroupDRO requires
    training attributes, so no example has group -1).
    """
    losses = losses.float()
    sums = losses.new_zeros(n_groups).index_add(0, groups, losses)
    counts = torch.bincount(groups, minlength=n_groups).to(losses.dtype)
    return sums / counts.clamp(min=1), counts


class GroupDROWeights(nn.Module):
    """The adversary's group weights ``q`` (a checkpointed buffer) and the robust loss built from them.

    Args:
        group_counts: training examples per group, ``n_g``. Groups with ``n_g = 0`` start (and stay) at q = 0.
        eta: step size of the exponentiated-gradient update of ``q``.
        adjustment: generalisation adjustment ``C``; adds ``C / sqrt(n_g)`` to group g's loss in the update.
    """

    q: Tensor
    adjust: Tensor

    def __init__(self, group_counts: Tensor, eta: float = 0.01, adjustment: float = 0.0) -> None:
        super().__init__()
        counts = torch.as_tensor(group_counts, dtype=torch.float32).reshape(-1)
        present = counts > 0
        if not bool(present.any()):
            raise ConfigError("GroupDRO needs at least one training example with a known group")
        self.eta = float(eta)
        self.adjustment = float(adjustment)
        self.register_buffer("q", present.float() / present.sum())
        # Derived from the training counts at build time, so not part of the checkpoint.
        adjust = torch.where(present, self.adjustment / counts.clamp(min=1).sqrt(), torch.zeros_like(counts))
        self.register_buffer("adjust", adjust, persistent=False)

    @property
    def n_groups(self) -> int:
        return self.q.numel()

    @torch.no_grad()
    def update(self, group_losses: Tensor) -> None:
        """``q_g <- q_g exp(eta (L_g + C/sqrt(n_g)))``, renormalised (in log space: no overflow; q = 0 stays 0)."""
        adjusted = group_losses.detach().float() + self.adjust
        self.q.copy_(torch.softmax(self.q.log() + self.eta * adjusted, dim=0))

    def forward(self, losses: Tensor, groups: Tensor) -> Tensor:
        """Update ``q`` from this batch's per-group losses, then return ``sum_g q_g L_g`` with the new ``q``."""
        with torch.autocast(device_type=self.q.device.type, enabled=False):
            group_losses, counts = group_mean_losses(losses, groups, self.n_groups)
            observed = group_losses
            if dist.is_distributed():
                # Every rank must hold the same q: the adversary sees the losses of the whole global batch.
                stats = torch.cat([group_losses.detach() * counts, counts]).to(dist.collective_device())
                torch.distributed.all_reduce(stats)
                stats = stats.to(counts.device)
                totals = stats[self.n_groups :]
                observed = stats[: self.n_groups] / totals.clamp(min=1)
                # this rank's part of the global batch's group means: its sums over the global counts. The
                # trainer weighs each rank's loss by its share of the batch (n_r / m), undone by m / n_r here,
                # so the averaged gradient is that of sum_g q_g L_g with L_g the global batch's group mean.
                share = totals.sum() / counts.sum().clamp(min=1)
                group_losses = group_losses * counts / totals.clamp(min=1) * share
            self.update(observed)
            return (self.q * group_losses).sum()


@dataclass
class GroupDROHparams(TrainHparams):
    """GroupDRO: ``eta`` (q step size), ``adjustment`` (C), ``group_balanced`` (group-balanced minibatches)."""

    eta: float = bounded(0.01, NON_NEGATIVE, "0 keeps q uniform")
    adjustment: float = bounded(0.0, NON_NEGATIVE, "the paper uses C in 0..5")
    group_balanced: bool = True


@register_method("groupdro")
class GroupDRO(Method):
    """Group distributionally robust optimisation with online group weights (Sagawa et al., ICLR 2020)."""

    family = "robust optimisation"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    summary = "online worst-group loss minimisation (needs training groups)"
    Hparams = GroupDROHparams
    requires = Requirements(train_attrs=True)
    #: searched by `debiaslab tune`: η over DomainBed's range 10^U(-3,-1); weight decay up to 1 (the paper's strong
    #: L2 is what makes GroupDRO generalise to the worst group)
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "weight_decay": loguniform(1e-6, 1.0),
        "eta": loguniform(1e-3, 1e-1),
    }
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "eta": Default(0.01, f"{CODE}: --robust_step_size 0.01"),
            "adjustment": Default(0.0, f"{CODE}: --generalization_adjustment 0 (paper tunes C in 0..5)"),
            "group_balanced": Default(
                True, "GroupDRO paper: group-balanced minibatches; official README commands pass --reweight_groups"
            ),
        },
        "waterbirds": {
            "lr": Default(1e-5, STRONG_L2_WATERBIRDS),
            "weight_decay": Default(1.0, STRONG_L2_WATERBIRDS),
            "batch_size": Default(128, STRONG_L2_WATERBIRDS),
            "epochs": Default(300, STRONG_L2_WATERBIRDS),
        },
        "celeba": {
            "lr": Default(1e-5, STRONG_L2_CELEBA),
            "weight_decay": Default(0.1, STRONG_L2_CELEBA),
            "batch_size": Default(128, STRONG_L2_CELEBA),
            "epochs": Default(50, STRONG_L2_CELEBA),
        },
        "colored_mnist": {
            **CMNIST_MLP,
            "eta": Default(0.01, OURS_CMNIST),
            "adjustment": Default(0.0, OURS_CMNIST),
        },
    }

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the group weights q did not sit on one group for the whole run (their per-epoch maximum)."""
        checks = super().health(train, val, trainer)
        result = self._fitted_result()
        history = [h for s in result.stages for h in s.history if "q_max_end" in h]
        final_q = result.extras.get("group_weights") or []
        if history:
            q_max = [h["q_max_end"] for h in history]
            checks.append(group_weight_check(q_max, [h["q_max_group"] for h in history], final_q))
        return checks

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp = self.hparams
        rule = self.selection_rule(val)
        counts = train.group_counts

        def build() -> Stage:
            model = self.build_model(train)
            dro = GroupDROWeights(counts, eta=hp.eta, adjustment=hp.adjustment)

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                per_example = F.cross_entropy(model(batch.x), batch.y, reduction="none")
                return {"loss": dro(per_example, batch.group), "q_max": dro.q.max()}

            def on_epoch_end(ctx: StepContext) -> dict[str, float]:
                q_max, g = dro.q.max(dim=0)
                log.debug("groupdro epoch %d: q_max %.4f on group %d", ctx.epoch + 1, float(q_max), int(g))
                return {"q_max_group": int(g), "q_max_end": float(q_max)}

            sampler = (
                group_balanced_sampler(train.group, train.n_groups, num_samples=len(train))
                if hp.group_balanced
                else UniformSampler(len(train))
            )
            return method_stage(
                self,
                "groupdro",
                train,
                rule,
                modules=nn.ModuleDict({"model": model, "dro": dro}),
                loss_fn=loss,
                predict_fn=model,
                sampler=sampler,
                on_epoch_end=on_epoch_end,
            )

        stage, result = trainer.run_stage("groupdro", build, train, val)
        modules = stage.modules
        assert isinstance(modules, nn.ModuleDict)
        q = modules["dro"].q.detach().cpu()
        extras = {"group_weights": q.tolist(), "group_counts": counts.tolist()}
        return self.fit_result(train, modules["model"], [result], rule, extras)
