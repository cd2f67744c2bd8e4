"""Load pretrained (e.g. ImageNet) weights into a backbone, safely and with clear errors.

The weights come from a local state-dict file, from a URL, or from ``"imagenet"``: torchvision's published
ImageNet-1k weights for the architecture (:data:`IMAGENET_WEIGHTS`). A download goes through torch's hub
(``torch.hub.download_url_to_file``, into ``$TORCH_HOME/hub/checkpoints``, no torchvision needed) and is checked
against the SHA-256 prefix its file name carries (``resnet18-f37072fd.pth``: the file's SHA-256 starts with
``f37072fd``), as ``torch.hub.load_state_dict_from_url(check_hash=True)`` does; a file already there is checked
the same way. Files are read with ``weights_only=True`` so a weights file cannot run code. The classifier
(``fc.`` in the common ImageNet layout, ``head.`` here) is dropped when its shape differs from the model's.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)

_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")
_HEAD = "head."

#: the name that asks for the architecture's published ImageNet weights
IMAGENET = "imagenet"
#: torchvision's ImageNet-1k weights (``IMAGENET1K_V1``, what ``resnet18(pretrained=True)`` loads), by the
#: model's ``arch``; the 8 hex digits in each file name are the start of the file's SHA-256
IMAGENET_WEIGHTS = {
    "ResNet-18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "ResNet-50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
_URL_SCHEMES = ("http://", "https://", "file://")


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


def _hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix a weights file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``), torch hub's rule."""
    match = torch.hub.HASH_REGEX.search(name)
    return match.group(1) if match and match.group(1) else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(url: str, what: str, cache_dir: str | Path | None = None) -> Path:
    """The local copy of the weights at ``url``: downloaded once into ``cache_dir`` (default torch hub's
    ``checkpoints`` folder) and checked against the SHA-256 prefix in its file name. When neither a good local copy
    nor the download is possible, one ConfigError line says where to put the file or how to pass a local one."""
    name = os.path.basename(unquote(urlparse(url).path))
    if not name:
        raise ConfigError(f"pretrained weights URL {url!r} names no file")
    folder = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    dest = folder / name
    prefix = _hash_prefix(name)
    if dest.is_file():
        if prefix is not None and not _sha256(dest).startswith(prefix):
            raise ConfigError(
                f"{dest} does not match the SHA-256 prefix {prefix} its name carries (a broken copy of {what}); "
                "delete it to download it again"
            )
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dest), prefix, progress=False)
    except Exception as exc:  # no network, HTTP error, unwritable folder, wrong checksum
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot fetch {what} from {url} ({reason}); put {name} in {folder} or pass a local file "
            f"(model_kwargs={{pretrained: /path/to/{name}}})"
        ) from exc
    log.info("pretrained: fetched %s into %s (SHA-256 prefix %s checked)", url, dest, prefix or "none")
    return dest


def resolve_weights(source: str | Path, arch: str) -> Path:
    """The local file behind a ``pretrained`` value: ``"imagenet"`` (the architecture's published ImageNet
    weights, fetched and checked), a URL (fetched and checked), or a local path (returned as given)."""
    text = str(source)
    if text == IMAGENET:
        if arch not in IMAGENET_WEIGHTS:
            raise ConfigError(
                f"pretrained={IMAGENET!r}: no published ImageNet weights for {arch}; "
                f"known: {', '.join(sorted(IMAGENET_WEIGHTS))} (or give a local file)"
            )
        return fetch_weights(IMAGENET_WEIGHTS[arch], f"the ImageNet {arch} weights")
    if text.startswith(_URL_SCHEMES):
        return fetch_weights(text, f"the {arch} weights")
    return Path(source).expanduser()


def without_pretrained(kwargs: Mapping[str, object]) -> dict[str, object]:
    """Model options with every ``pretrained`` (nested ones in ``base_kwargs`` too) left out: rebuilding a saved
    model whose state dict replaces every weight needs neither the weights file nor a download."""
    return {k: (without_pretrained(v) if isinstance(v, Mapping) else v) for k, v in kwargs.items() if k != "pretrained"}


def load_pretrained(model: M, path: str | Path, *, strict_backbone: bool = True) -> M:
    """Load pretrained weights into ``model`` (in place) and return it. ``path`` is a local state-dict file, a
    URL, or ``"imagenet"`` (see :func:`resolve_weights`).

    Accepts ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.`` prefixes, maps ``fc.`` to
    ``head.``, and keeps the model's own head (with a logged note) when the file's head has another shape.
    With ``strict_backbone`` every backbone tensor must match by name and shape, else a ConfigError says what
    differs; without it, mismatching tensors are skipped with a warning.
    """
    arch = getattr(model, "arch", type(model).__name__)
    path = resolve_weights(path, arch)
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights requested from {path} but no such file; "
            f"give a local path to an ImageNet {arch} state dict, or {IMAGENET!r} for the published weights"
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
