"""The audit's biased reference model, and the groups the audit shows.

The reference is JTT's identification model: ERM for JTT's ``identify_epochs`` at its identification learning
rate and weight decay, every value resolved from JTT's hyperparameter table for the dataset (on the dataset's
training preset), trained by the engine as the stage JTT names ``identify``, so with the same seed it is the very
model whose errors JTT would upweight. Or the deployed model of a finished run (``--reference RUN``).

Its per-example training loss ranks the hardest and easiest images of each class. The groups come from the
attribute labels when both splits have them; otherwise each class is split into the examples the reference gets
right and those it gets wrong (JTT's error set), the pseudo-groups.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.methods.jtt import JTT
from debiaslab.methods.stages import method_ce_stage, optim_with
from debiaslab.runs import load_finished_run

log = logging.getLogger(__name__)

#: JTT's name for its identification stage: stage seeds derive from it, so the reference is JTT's model
REFERENCE_STAGE = "identify"
PSEUDO_NAMES = ("reference right", "reference wrong")


@dataclass
class Reference:
    """The biased reference model and how it was obtained (``settings`` go on the page)."""

    model: nn.Module
    source: str
    settings: dict[str, Any] = field(default_factory=dict)


def biased_reference(
    train: GroupDataset,
    trainer: Trainer,
    *,
    dataset: str,
    reference_run: str | os.PathLike[str] | None = None,
    hparams: dict[str, Any] | None = None,
) -> Reference:
    """The biased reference model: the deployed model of ``reference_run``, or JTT's identification model trained
    on ``train`` (JTT's hyperparameters for ``dataset``, with ``hparams`` on top: e.g. the audited run's model)."""
    if reference_run is not None:
        model, spec = load_finished_run(reference_run)
        check_input_shape(spec, train, f"reference run {reference_run}")
        model.to(trainer.device)
        return Reference(model, f"the deployed model of the finished run {reference_run}", {"model": spec["name"]})
    method = JTT(dataset=dataset, **(hparams or {}))
    hp = method.hparams
    optim = optim_with(hp, hp.identify_lr, hp.identify_weight_decay)

    def build() -> Any:
        model = method.build_model(train)
        return method_ce_stage(method, REFERENCE_STAGE, model, train, "last", epochs=hp.identify_epochs, optim=optim)

    stage, result = trainer.run_stage(REFERENCE_STAGE, build, train, None)
    settings = {
        "model": hp.model,
        "model_kwargs": dict(hp.model_kwargs),
        "epochs": hp.identify_epochs,
        "optimizer": optim.optimizer,
        "lr": optim.lr,
        "weight_decay": optim.weight_decay,
        "batch_size": hp.batch_size,
        "seed": trainer.seed,
        "train_time_s": round(result.wall_time_s, 2),
        "sources": {n: method.hparam_sources.get(n, "default") for n in ("identify_epochs", "identify_lr", "model")},
    }
    return Reference(stage.modules, "JTT's identification model (ERM), trained here", settings)


def check_input_shape(spec: dict[str, Any], data: GroupDataset, what: str) -> None:
    """A model file built for other inputs than ``data`` gives is a one-line error, not a shape traceback."""
    expected = list(data.input_shape)
    shape, n_classes = list(spec.get("input_shape", expected)), int(spec.get("n_classes", data.n_classes))
    if shape != expected or n_classes != data.n_classes:
        raise ConfigError(
            f"{what}: its model takes inputs {spec.get('input_shape')} with {spec.get('n_classes')} classes; "
            f"dataset {data.name} gives {expected} with {data.n_classes}"
        )


@torch.no_grad()
def logits_of(model: nn.Module, data: GroupDataset, trainer: Trainer) -> Tensor:
    """Logits of ``model`` for every example of ``data`` (eval mode), float32 on the CPU."""
    with eval_mode(model):
        return trainer.predict(model, data)


def per_example_loss(logits: Tensor, data: GroupDataset) -> Tensor:
    return F.cross_entropy(logits.float(), data.y, reduction="none")


@dataclass
class Grouping:
    """Within-class groups of the training and validation examples (group id = ``y * len(names) + g``).

    ``source`` is ``attributes`` (the data's bias attribute) or ``reference`` (the reference's right / wrong
    split of each class); ``aligned`` holds the ids of the majority groups.
    """

    source: str
    names: list[str]
    train: Tensor
    val: Tensor
    aligned: frozenset[int]

    @property
    def n(self) -> int:
        return len(self.names)

    def is_majority(self, y: Tensor, groups: Tensor) -> Tensor:
        """Bool per example: its group (class ``y``, group ``groups``) is one of the majority groups."""
        return torch.isin(y * self.n + groups, torch.tensor(sorted(self.aligned), dtype=torch.long))

    def counts(self, data: GroupDataset, split: str) -> Tensor:
        """``(n_classes, n)`` examples per class and group."""
        groups = self.train if split == "train" else self.val
        flat = torch.bincount(data.y * self.n + groups, minlength=data.n_classes * self.n)
        return flat.reshape(data.n_classes, self.n)


def audit_groups(train: GroupDataset, val: GroupDataset, train_wrong: Tensor, val_wrong: Tensor) -> Grouping:
    """True groups when both splits have attribute labels, else the reference's right / wrong per class."""
    if train.has_attrs and val.has_attrs and train.n_attrs > 1:
        names = [f"attr {a}" for a in range(train.n_attrs)]
        return Grouping("attributes", names, train.attr.clone(), val.attr.clone(), train.aligned_groups)
    n = len(PSEUDO_NAMES)
    aligned = frozenset(c * n for c in range(train.n_classes))
    return Grouping("reference", list(PSEUDO_NAMES), train_wrong.long(), val_wrong.long(), aligned)
