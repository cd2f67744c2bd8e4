"""Atomic checkpoints that load with ``weights_only=True``: a checkpoint from someone else cannot run code."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from debiaslab.errors import DataError
from debiaslab.utils.io import atomic_write

log = logging.getLogger(__name__)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` via a temp file + rename (an interrupted save leaves the old file intact)."""
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing or unreadable file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise DataError(
            f"checkpoint {path} could not be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "expected a debiaslab checkpoint written by torch.save"
        ) from exc


def save_model_file(path: str | os.PathLike[str], model: torch.nn.Module, spec: dict[str, Any]) -> Path:
    """Write a deployed model as ``{"spec", "state_dict"}``: the registry name and arguments that rebuild it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"spec": spec, "state_dict": state})


def load_model_file(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`save_model_file` (``weights_only`` load); returns it and its spec. Its
    ``pretrained`` start is not fetched again: the saved state dict replaces every weight."""
    from debiaslab.models import build_model
    from debiaslab.models.pretrained import without_pretrained

    state = load_checkpoint(path)
    if "spec" not in state or "state_dict" not in state:
        raise DataError(f"{path} is not a debiaslab model file (expected keys 'spec' and 'state_dict')")
    spec = state["spec"]
    kwargs = without_pretrained(spec["kwargs"])
    model = build_model(spec["name"], tuple(spec["input_shape"]), spec["n_classes"], **kwargs)
    model.load_state_dict(state["state_dict"])
    return model, spec


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (for keeping the best epoch in memory)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
