"""Stage helpers shared by methods: cross-entropy and method-configured stages, the error set and its quality
(JTT, BAM, DeTT, label-free REST)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.optim import OptimConfig
from debiaslab.engine.sampling import Sampler, UniformSampler
from debiaslab.engine.sparse import SparseConfig
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer, eval_mode
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
    sparsity: SparseConfig | None = None,
) -> Stage:
    """A stage that minimises (optionally per-example weighted) cross-entropy of ``model``.

    ``sampler`` decides which examples each epoch visits (default: all, shuffled); ``example_weights`` (indexed by
    the dataset index) multiply each example's loss; ``sparsity`` trains ``model`` sparse.
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
        sparsity=sparsity,
    )


def method_ce_stage(method: Any, name: str, model: nn.Module, train: GroupDataset, selection: str, **kw: Any) -> Stage:
    """:func:`cross_entropy_stage` with ``method``'s epochs, batch size, optimiser and sparsity unless ``kw`` gives
    them."""
    hp = method.hparams
    defaults = {
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "optim": hp.optim_config(),
        "sparsity": hp.sparse_config(),
    }
    return cross_entropy_stage(name, model, train, selection=selection, **{**defaults, **kw})


def method_stage(method: Any, name: str, train: GroupDataset, selection: str, **fields: Any) -> Stage:
    """A :class:`Stage` visiting every example once per epoch with ``method``'s epochs, batch size, optimiser and
    sparsity; ``fields`` give the rest (modules, loss_fn, predict_fn, ...) and may override those."""
    hp = method.hparams
    defaults = {
        "sampler": UniformSampler(len(train)),
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "optim": hp.optim_config(),
        "selection": selection,
        "sparsity": hp.sparse_config(),
    }
    return Stage(name=name, **{**defaults, **fields})


def optim_with(hp: Any, lr: float | None, weight_decay: float | None) -> OptimConfig:
    """``hp``'s optimiser settings with ``lr`` and ``weight_decay`` replaced where they are given (not None)."""
    overrides = {k: v for k, v in (("lr", lr), ("weight_decay", weight_decay)) if v is not None}
    return hp.optim_config(**overrides)


def erm_stage(method: Any, train: GroupDataset, selection: str, name: str = "erm") -> Callable[[], Stage]:
    """The build function of a plain ERM stage from a method's model and optimiser hyperparameters."""

    def build() -> Stage:
        return method_ce_stage(method, name, method.build_model(train), train, selection)

    return build


def error_set(
    trainer: Trainer,
    predict_fn: Callable[[Tensor], Tensor],
    dataset: GroupDataset,
    modules: nn.Module | None = None,
) -> Tensor:
    """Indices of the examples ``predict_fn`` misclassifies, from a clean pass in eval mode (no augmentation
    state, no auxiliary terms)."""
    with eval_mode(modules):
        logits = trainer.predict(predict_fn, dataset)
    wrong = logits.argmax(dim=1) != dataset.y
    return torch.nonzero(wrong).flatten()


def error_set_quality(train: GroupDataset, errors: Tensor) -> dict[str, Any]:
    """How well the error set finds bias-conflicting examples (only when attributes and aligned groups are known)."""
    if not train.has_attrs or not train.aligned_groups:
        return {}
    conflicting = ~train.is_aligned
    n_conf = int(conflicting.sum())
    hit = int(conflicting[errors].sum()) if errors.numel() else 0
    return {
        "error_set_conflicting": hit,
        "train_conflicting": n_conf,
        "error_set_precision": hit / errors.numel() if errors.numel() else float("nan"),
        "error_set_recall": hit / n_conf if n_conf else float("nan"),
    }


def log_error_set(
    logger: logging.Logger, method: str, errors: Tensor, n: int, after: str, quality: dict[str, Any]
) -> None:
    """Log the error set's size after ``after`` (e.g. "3 epochs"), with its precision and recall for
    bias-conflicting examples when ``quality`` (:func:`error_set_quality`) has them."""
    logger.info(
        "%s: error set of %d / %d training examples after %s%s",
        method,
        errors.numel(),
        n,
        after,
        f" (precision {quality['error_set_precision']:.3f}, recall {quality['error_set_recall']:.3f} "
        "for bias-conflicting examples)"
        if quality
        else "",
    )
