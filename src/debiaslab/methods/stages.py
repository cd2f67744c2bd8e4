"""Stage helpers shared by methods: a cross-entropy stage and the error set (JTT, BAM, DeTT, label-free REST)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.optim import OptimConfig
from debiaslab.engine.sampling import Sampler, UniformSampler
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.engine.weighting import lookup, weighted_mean


def cross_entropy_stage(
    name: str,
    model: nn.Module,
    train: GroupDataset,
    *,
    epochs: int,
    batch_size: int,
    optim: OptimConfig,
    selection: str,
    sampler: Sampler | None = None,
    example_weights: Tensor | None = None,
) -> Stage:
    """A stage that minimises (optionally per-example weighted) cross-entropy of ``model``.

    ``sampler`` decides which examples each epoch visits (default: all, shuffled); ``example_weights`` (indexed by
    the dataset index) multiply each example's loss.
    """

    def loss(batch: Batch, ctx: StepContext) -> Tensor:
        if example_weights is None:
            return F.cross_entropy(model(batch.x), batch.y)
        per_example = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        return weighted_mean(per_example, lookup(example_weights, batch.index))

    return Stage(
        name=name,
        modules=model,
        loss_fn=loss,
        predict_fn=model,
        sampler=sampler or UniformSampler(len(train)),
        epochs=epochs,
        batch_size=batch_size,
        optim=optim,
        selection=selection,
    )


def erm_stage(method: Any, train: GroupDataset, selection: str, name: str = "erm") -> Callable[[], Stage]:
    """The build function of a plain ERM stage from a method's model and optimiser hyperparameters."""
    hp = method.hparams

    def build() -> Stage:
        return cross_entropy_stage(
            name,
            method.build_model(train),
            train,
            epochs=hp.epochs,
            batch_size=hp.batch_size,
            optim=hp.optim_config(),
            selection=selection,
        )

    return build


def error_set(
    trainer: Trainer,
    predict_fn: Callable[[Tensor], Tensor],
    dataset: GroupDataset,
    modules: nn.Module | None = None,
) -> Tensor:
    """Indices of the examples ``predict_fn`` misclassifies, from a clean pass in eval mode (no augmentation
    state, no auxiliary terms)."""
    if modules is not None:
        was_training = modules.training
        modules.eval()
    try:
        logits = trainer.predict(predict_fn, dataset)
    finally:
        if modules is not None and was_training:
            modules.train()
    wrong = logits.argmax(dim=1) != dataset.y
    return torch.nonzero(wrong).flatten()
