"""The audit's biased reference model, and the groups the audit shows.

The reference comes from a group inferrer (:mod:`debiaslab.inference`), ``error_set`` by default: JTT's
identification model, ERM for JTT's ``identify_epochs`` at its identification learning rate and weight decay as
JTT's table sets them for the dataset, trained by the engine as the stage JTT names ``identify`` (with the same
seed, the very model whose errors JTT would upweight). Or the deployed model of a finished run
(``--reference RUN``), handed to the inferrer. Its per-example training loss ranks the hardest and easiest images
of each class.

The groups shown are, in this order: a groups file's (``--groups``), the data's attributes when both splits have
them, or the inferrer's pseudo-groups from the reference (``error_set``: the reference's right / wrong split of
each class).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.inference.base import InferredGroups
from debiaslab.inference.groups_file import GroupsFile
from debiaslab.inference.registry import get_inferrer
from debiaslab.run.train import load_finished_run

log = logging.getLogger(__name__)

DEFAULT_INFERRER = "error_set"
ERROR_SET_NAMES = ("reference right", "reference wrong")


@dataclass
class Reference:
    """The biased reference model, its inferred groups of train and val, and how it was obtained (``settings``
    go on the page)."""

    model: nn.Module
    groups: InferredGroups
    source: str
    settings: dict[str, Any] = field(default_factory=dict)


def biased_reference(
    train: GroupDataset,
    val: GroupDataset,
    trainer: Trainer,
    *,
    dataset: str,
    inferrer: str = DEFAULT_INFERRER,
    reference_run: str | os.PathLike[str] | None = None,
    hparams: dict[str, Any] | None = None,
) -> Reference:
    """The biased reference model and its pseudo-groups: ``inferrer`` (its settings and its reference model's for
    ``dataset``, with ``hparams`` on top, e.g. the audited run's model) trains the reference on ``train``, or is
    handed the deployed model of ``reference_run``."""
    worker = get_inferrer(inferrer)(dataset=dataset, **(hparams or {}))
    given = None
    if reference_run is not None:
        given, spec = load_finished_run(reference_run)
        check_input_shape(spec, train, f"reference run {reference_run}")
    started = time.perf_counter()
    groups = worker.infer(train, val, trainer, given)
    assert groups.reference is not None
    hp = worker.method.hparams
    settings: dict[str, Any] = {"inferrer": worker.name, "seed": trainer.seed, "recipe": worker.recipe()}
    if given is not None:
        source = f"the deployed model of the finished run {reference_run}"
        settings["model"] = spec["name"]
    else:
        source = f"trained here by the `{worker.name}` group inferrer"
        settings.update(model=hp.model, model_kwargs=dict(hp.model_kwargs), batch_size=hp.batch_size)
        if hasattr(hp, "identify_epochs"):  # JTT's identification stage
            lr = hp.identify_lr if hp.identify_lr is not None else hp.lr
            wd = hp.identify_weight_decay if hp.identify_weight_decay is not None else hp.weight_decay
            settings.update(epochs=hp.identify_epochs, optimizer=hp.optimizer, lr=lr, weight_decay=wd)
    settings["time_s"] = round(time.perf_counter() - started, 2)
    return Reference(groups.reference, groups, source, settings)


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

    ``source`` is ``attributes`` (the data's bias attribute), ``inferred`` (the reference's pseudo-groups) or
    ``file`` (a groups file, ``label`` names it); group 0 of each class is its majority, except for attributes,
    whose majority groups are the dataset's aligned groups (``aligned``).
    """

    source: str
    label: str
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


def audit_groups(
    train: GroupDataset, val: GroupDataset, inferred: InferredGroups, groups_file: GroupsFile | None = None
) -> Grouping:
    """The groups file's when given, else the attributes when both splits have them, else the inferred ones."""
    if groups_file is not None:
        n = groups_file.n_per_class
        names = pseudo_names(str(groups_file.meta.get("inferrer")), n)
        first = frozenset(c * n for c in range(train.n_classes))
        pseudo = groups_file.splits
        label = f"groups file {groups_file.path.name} ({groups_file.meta.get('inferrer')})"
        return Grouping("file", label, names, pseudo["train"].pseudo, pseudo["val"].pseudo, first)
    if train.has_attrs and val.has_attrs and train.n_attrs > 1:
        names = [f"attr {a}" for a in range(train.n_attrs)]
        return Grouping(
            "attributes", "bias attribute", names, train.attr.clone(), val.attr.clone(), train.aligned_groups
        )
    n = inferred.n_per_class
    first = frozenset(c * n for c in range(train.n_classes))
    splits = inferred.splits
    label = f"{inferred.inferrer} pseudo-groups of the reference"
    return Grouping(
        "inferred", label, pseudo_names(inferred.inferrer, n), splits["train"].pseudo, splits["val"].pseudo, first
    )


def pseudo_names(inferrer: str, n: int) -> list[str]:
    """``error_set``'s two groups are the reference's right / wrong; others are numbered (0: the majority)."""
    if inferrer == DEFAULT_INFERRER and n == len(ERROR_SET_NAMES):
        return list(ERROR_SET_NAMES)
    return [f"pseudo {p}" for p in range(n)]
