"""What a training stage is, as a method describes it: modules, loss, sampler, optimiser, selection.

A method never writes a training loop; it hands the :class:`~debiaslab.engine.trainer.Trainer` one
:class:`Stage` per phase (ERM: one; JTT: identify -> upweight; BAM: amplify -> upweight; ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from debiaslab.data.core import Batch
from debiaslab.engine.optim import OptimConfig
from debiaslab.engine.sampling import Sampler
from debiaslab.engine.sparse import SparseConfig

LossOutput = Tensor | dict[str, Tensor]


@dataclass
class StepContext:
    """Where the loop is; passed to the loss and to hooks."""

    stage: str
    epoch: int  # 0-based epoch being trained
    step: int  # optimiser steps taken in this stage so far
    epochs: int
    steps_per_epoch: int


@dataclass
class Stage:
    """One phase of a method.

    Attributes:
        name: unique within the method; names the checkpoint files.
        modules: everything trained or carried by this stage (checkpointed together, moved to the device).
            Per-example state (LfF loss averages, BAM auxiliary logits) lives here as buffers/parameters.
        loss_fn: ``(batch, ctx) -> loss`` or ``{"loss": loss, **logged_terms}``.
        predict_fn: ``x -> logits`` of the model this stage selects on (and that is deployed, if last).
        sampler: which indices each epoch visits.
        epochs: number of epochs.
        batch_size: minibatch size.
        optim: optimiser and LR schedule.
        param_groups: optimiser parameter groups; default: every parameter of ``modules`` requiring grad.
        selection: a selection-rule name scored on validation each epoch; ``"last"`` keeps the final epoch.
        extra_predictors: more read-outs evaluated and logged each epoch (e.g. DeNetDM's experts).
        selection_predictor: the key of ``extra_predictors`` that the rule scores (default: ``predict_fn``).
        train_mode: puts ``modules`` in training mode (override to keep frozen parts in eval mode).
        after_step: called after every optimiser step (e.g. re-apply sparse masks).
        sparsity: train the stage sparse (masks on its Linear/Conv weights, :mod:`debiaslab.engine.sparse`).
        on_epoch_end: called after each epoch's training steps; may return values to log.
        report_rules: further selection rules under which the trainer also keeps the best epoch's weights
            (:class:`~debiaslab.engine.rule_keeper.RuleKeeper`), beside the deployed ``selection``.
        run_rules: whether the trainer's own ``report_rules`` (the run's) apply here too when the stage selects;
            False for a stage that selects by a criterion of its own on a split of its own (SSA's attribute
            predictors, scored on relabelled validation examples), where the run's rules mean nothing.
        grad_sync: how gradients are averaged when the run has several processes: ``"ddp"``
            (DistributedDataParallel around the whole loss) or ``"allreduce"`` (one coalesced all-reduce after
            backward, for losses DDP cannot run, e.g. double backprop); see
            :mod:`debiaslab.engine.data_parallel`.
    """

    name: str
    modules: nn.Module
    loss_fn: Callable[[Batch, StepContext], LossOutput]
    predict_fn: Callable[[Tensor], Tensor]
    sampler: Sampler
    epochs: int
    batch_size: int
    optim: OptimConfig = field(default_factory=OptimConfig)
    param_groups: Callable[[], Iterable[Any]] | None = None
    selection: str = "last"
    extra_predictors: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    selection_predictor: str | None = None
    train_mode: Callable[[nn.Module], None] | None = None
    after_step: Callable[[StepContext], None] | None = None
    sparsity: SparseConfig | None = None
    on_epoch_end: Callable[[StepContext], dict[str, float] | None] | None = None
    drop_last: bool = False
    report_rules: tuple[str, ...] = ()
    run_rules: bool = True
    grad_sync: str = "ddp"

    def parameters_to_optimize(self) -> list[Any]:
        if self.param_groups is not None:
            return list(self.param_groups())
        return [p for p in self.modules.parameters() if p.requires_grad]


@dataclass
class StageResult:
    """What a finished stage reports: its per-epoch history and which epoch it kept and why."""

    name: str
    history: list[dict[str, Any]]
    selected_epoch: int
    selection: str
    score: float | None
    wall_time_s: float
    #: per report rule, ``{"epoch", "score", "state"}`` of the epoch it picks (``state``: the stage modules' weights)
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: bool = False
