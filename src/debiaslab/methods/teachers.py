"""Teachers for distillation methods (DeTT, KD): a debiased model loaded from a run directory or trained on the spot.

Loading reads ``model.pt`` with ``weights_only=True``, verifies its checksum and checks the input shape and the
number of classes; training runs any registered method through the same trainer, so its stages are checkpointed
and resumable like the student's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import load_model_file
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DataError
from debiaslab.models.base import Backbone

log = logging.getLogger(__name__)

#: The deployed-model file of a run directory; the same name as ``debiaslab.run.train.MODEL`` (not imported:
#: ``runs`` sits above ``methods`` in the layering).
MODEL_FILE = "model.pt"


def load_finished_model(path: str | Path, option: str, example: str) -> tuple[nn.Module, dict[str, Any]]:
    """The deployed model (and its spec) of a finished run directory, or of a ``model.pt`` path; ``option`` (e.g.
    ``"dfr base_run"``) and ``example`` (a method that makes such a run) word the error when there is none."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"{option} {str(path)!r}: no {MODEL_FILE} found; expected a finished run directory "
            f"(debiaslab train --method {example} --out DIR) or the path of its {MODEL_FILE}"
        )
    try:
        return load_model_file(file)  # checksum verified; a model beside another run's config.yaml is refused
    except DataError as exc:
        raise DataError(f"{option} {str(path)!r}: {exc}") from exc


def load_teacher(path: str | Path, train: GroupDataset, owner: str) -> tuple[Backbone, dict[str, Any]]:
    """The deployed model of a finished run directory (or a ``model.pt`` path), checked against ``train``."""
    model, spec = load_finished_model(path, f"{owner} teacher_run", "jtt")
    shape, k = tuple(spec["input_shape"]), int(spec["n_classes"])
    if shape != tuple(train.input_shape) or k != train.n_classes:
        raise ConfigError(
            f"{owner} teacher_run {str(path)!r} holds a model for inputs {shape} with {k} classes, but the "
            f"training data has inputs {tuple(train.input_shape)} with {train.n_classes} classes"
        )
    return check_backbone(model, str(path), owner), spec


def check_backbone(model: nn.Module, where: str, owner: str) -> Backbone:
    """A teacher must expose ``features`` and a linear ``head`` (every debiaslab backbone does)."""
    if not isinstance(model, Backbone) or not isinstance(getattr(model, "head", None), nn.Linear):
        raise ConfigError(
            f"{owner}: the teacher from {where} is a {type(model).__name__}, not a backbone with features() and "
            "a linear head"
        )
    return model


def train_teacher(
    method_name: str,
    hparams: dict[str, Any],
    dataset: str | None,
    train: GroupDataset,
    val: GroupDataset | None,
    trainer: Trainer,
    owner: str,
) -> tuple[Backbone, dict[str, Any]]:
    """Fit a registered method (its labels are checked first) and return its deployed model and model spec."""
    from debiaslab.methods.registry import get_method

    teacher = get_method(method_name)(dataset=dataset, **hparams)
    log.info("%s: training the teacher with %s on the spot", owner, method_name)
    teacher.fit(train, val, trainer=trainer)
    assert teacher.fit_result_ is not None
    return check_backbone(teacher.fit_result_.model, f"method {method_name}", owner), teacher.fit_result_.model_spec


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter frozen."""
    model.requires_grad_(False)
    return model.eval()


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``-mean_i Σ_k softmax(t_i/τ)_k · log_softmax(s_i/τ)_k``: the KL divergence from the teacher's softened
    distribution up to the teacher's entropy (the same gradient for the student). Computed in float32."""
    targets = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(dim=1).mean()
