"""Load user-supplied (e.g. ImageNet) weights into a backbone, safely and with clear errors.

Only local files are read, with ``weights_only=True`` so a weights file cannot run code. The classifier
(``fc.`` in the common ImageNet layout, ``head.`` here) is dropped when its shape differs from the model's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")
_HEAD = "head."


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    """Find the state dict inside ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers (possibly nested)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    return {str(k): v for k, v in obj.items()}


def _rename(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return _HEAD + key[3:] if key.startswith("fc.") else key


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def load_pretrained(model: M, path: str | Path, *, strict_backbone: bool = True) -> M:
    """Load a local state-dict file into ``model`` (in place) and return it.

    Accepts ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.`` prefixes, maps ``fc.`` to
    ``head.``, and keeps the model's own head (with a logged note) when the file's head has another shape.
    With ``strict_backbone`` every backbone tensor must match by name and shape, else a ConfigError says what
    differs; without it, mismatching tensors are skipped with a warning.
    """
    path = Path(path).expanduser()
    arch = getattr(model, "arch", type(model).__name__)
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights requested from {path} but no such file; "
            f"give a local path to an ImageNet {arch} state dict"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or pickled objects other than tensors
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot read pretrained weights from {path}: {msg}") from exc
    loaded = {_rename(k): v for k, v in _unwrap(raw, path).items()}

    own = model.state_dict()
    head_keys = {k for k in own if k.startswith(_HEAD)}
    file_head = {k for k in loaded if k.startswith(_HEAD)}
    if file_head:
        if file_head != head_keys or any(loaded[k].shape != own[k].shape for k in file_head):
            shapes = {k: tuple(loaded[k].shape) for k in sorted(file_head)}
            log.info("pretrained %s: head %s differs from the model's; keeping the model's new head", path, shapes)
            loaded = {k: v for k, v in loaded.items() if k not in file_head}
    elif head_keys:
        log.info("pretrained %s has no classifier weights; the head stays freshly initialised", path)

    # BatchNorm's step counter is absent from older files and carries no learned state.
    missing = sorted(k for k in own if k not in loaded and k not in head_keys and "num_batches_tracked" not in k)
    unexpected = sorted(k for k in loaded if k not in own)
    mismatched = sorted(k for k in loaded if k in own and loaded[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if mismatched:
            shown = [f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
            parts.append(f"{len(mismatched)} with another shape ({_few(shown, 2)})")
        problem = f"pretrained weights in {path} do not match {arch}: " + "; ".join(parts)
        if strict_backbone:
            raise ConfigError(problem)
        log.warning("%s; loading the %d tensors that match", problem, len(loaded) - len(unexpected) - len(mismatched))
    keep = {k: v for k, v in loaded.items() if k in own and k not in mismatched}
    model.load_state_dict(keep, strict=False)
    return model
