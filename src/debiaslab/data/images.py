"""Lazy image files: decode a batch of files with Pillow on a thread pool into one uint8 ``(N, C, H, W)`` tensor.

Large image datasets (Waterbirds, CelebA, BFFHQ) cannot live in memory as float tensors, so a
:class:`~debiaslab.data.core.GroupDataset` gets an :class:`ImageFiles` as its ``loader``: the trainer asks for
the indices of a batch, the files are decoded in parallel (Pillow releases the GIL while decoding), each is
brought to one fixed size (optional centre crop, then a resize), and the batch is stacked. Everything after
that (random crops, flips, float conversion, normalisation) is a batch transform from
:mod:`debiaslab.data.transforms`, so the only per-item Python is the decoding itself. Small image sets
(DFA's Colored MNIST and CIFAR-10-C folders) can instead be decoded once with :meth:`ImageFiles.load_all`
and served from memory.

A file that is missing or fails to decode raises a :class:`~debiaslab.errors.DataError` naming the file (and
the table line that listed it) when it is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from debiaslab.data.core import BatchTransform
from debiaslab.data.transforms import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize, ToFloat
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES: dict[str, int] = {"RGB": 3, "L": 1}
DEFAULT_WORKERS = 8
#: ``preload="auto"`` decodes a split into memory when its uint8 pixels take at most this many bytes.
PRELOAD_AUTO_BYTES = 1 << 30
_PRELOAD_CHUNK = 2048


@dataclass(frozen=True)
class DecodeSpec:
    """How every file becomes an ``(H, W, C)`` uint8 array before batching.

    Args:
        size: ``(height, width)`` after resizing; ``None`` keeps the file's size (then every file must have
            the size of the first one).
        center_crop: side (or ``(h, w)``) of a centred crop taken *before* resizing (CelebA: 178).
        mode: Pillow mode, ``RGB`` (3 channels) or ``L`` (1 channel).
    """

    size: tuple[int, int] | None = None
    center_crop: tuple[int, int] | None = None
    mode: str = "RGB"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"image mode {self.mode!r}; expected one of: {', '.join(MODES)}")

    @property
    def channels(self) -> int:
        return MODES[self.mode]


def as_size(value: int | Sequence[int] | None, option: str) -> tuple[int, int] | None:
    """``224`` -> ``(224, 224)``; ``[h, w]`` -> ``(h, w)``; ``None`` stays ``None``; anything else is an error."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{option} {value!r} is not a size; expected an integer or [height, width]")
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r} is not a size; expected an integer or [height, width]") from None
    if h < 1 or w < 1:
        raise ConfigError(f"{option} {value!r} must be positive")
    return h, w


def check_workers(workers: object) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers {workers!r} is not a non-negative integer (decoding threads; 0 = no pool)")
    return workers


def decode_image(path: Path | str, spec: DecodeSpec, origin: str = "") -> np.ndarray:
    """One file as uint8 ``(H, W, C)``: convert to ``spec.mode``, centre-crop, resize (bilinear, antialiased)."""
    where = f" ({origin})" if origin else ""
    try:
        with Image.open(path) as im:
            im = im.convert(spec.mode)
            if spec.center_crop is not None:
                ch, cw = spec.center_crop
                w, h = im.size
                left, top = (w - cw) // 2, (h - ch) // 2  # may be negative: Pillow pads with black
                im = im.crop((left, top, left + cw, top + ch))
            if spec.size is not None and im.size != (spec.size[1], spec.size[0]):
                im = im.resize((spec.size[1], spec.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image {path}{where} is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}{where}: {exc}") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


class ImageFiles:
    """A :class:`~debiaslab.data.core.GroupDataset` loader: ``loader(indices) -> uint8 (N, C, H, W)``.

    Args:
        paths: one file per example, in split order.
        spec: how files are decoded and sized (:class:`DecodeSpec`).
        workers: decoding threads (0 decodes in the calling thread).
        origin: ``origin(i) -> str`` says where example ``i`` was listed (e.g. ``metadata.csv line 12``),
            for error messages.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        spec: DecodeSpec,
        *,
        workers: int = DEFAULT_WORKERS,
        origin: Callable[[int], str] | None = None,
    ) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.spec = spec
        self.workers = check_workers(workers)
        self.origin = origin
        self._shape: tuple[int, int, int] | None = None  # (H, W, C) of every decoded image
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, object]:
        """Picklable (for process pools and spawned workers): the thread pool is recreated on first use."""
        state = dict(self.__dict__)
        state["_pool"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _decode(self, i: int) -> np.ndarray:
        return decode_image(self.paths[i], self.spec, self.origin(i) if self.origin else "")

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image (decodes the first file when the size is not fixed by the spec)."""
        if self._shape is None:
            if self.spec.size is not None:
                self._shape = (*self.spec.size, self.spec.channels)
            elif not self.paths:
                raise DataError("no image files to take the image size from")
            else:
                self._shape = self._decode(0).shape  # type: ignore[assignment]
        h, w, c = self._shape  # type: ignore[misc]
        return c, h, w

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="debiaslab-decode")
            return self._pool

    def load(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` for the given example indices."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        c, h, w = self.item_shape
        out = np.empty((len(idx), h, w, c), dtype=np.uint8)

        def fill(k: int) -> None:
            i = int(idx[k])
            arr = self._decode(i)
            if arr.shape != out.shape[1:]:
                origin = f" ({self.origin(i)})" if self.origin else ""
                raise DataError(
                    f"image {self.paths[i]}{origin} is {arr.shape[1]}x{arr.shape[0]} with {arr.shape[2]} "
                    f"channel(s); expected {w}x{h} with {c} like the others: set the dataset option "
                    "image_size to resize every image"
                )
            out[k] = arr

        if self.workers <= 1 or len(idx) <= 1:
            for k in range(len(idx)):
                fill(k)
        else:
            for _ in self._executor().map(fill, range(len(idx))):
                pass  # map re-raises the first worker exception here
        return out

    def __call__(self, index: Tensor) -> Tensor:
        arr = self.load(index.cpu().numpy())
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def nbytes(self) -> int:
        c, h, w = self.item_shape
        return len(self) * c * h * w

    def load_all(self, what: str = "images") -> Tensor:
        """Every image, decoded once, as uint8 ``(N, C, H, W)`` (for small datasets served from memory)."""
        c, h, w = self.item_shape
        out = torch.empty((len(self), c, h, w), dtype=torch.uint8)
        if len(self) > _PRELOAD_CHUNK:
            log.info("decoding %d %s into memory", len(self), what)
        for start in range(0, len(self), _PRELOAD_CHUNK):
            stop = min(start + _PRELOAD_CHUNK, len(self))
            out[start:stop] = self(torch.arange(start, stop))
        return out

    def verify(self) -> None:
        """Decode every file once (fails on the first bad one, naming it); for checking a dataset up front."""
        for start in range(0, len(self), _PRELOAD_CHUNK):
            self.load(np.arange(start, min(start + _PRELOAD_CHUNK, len(self))))

    def __repr__(self) -> str:
        return f"ImageFiles(n={len(self)}, spec={self.spec}, workers={self.workers})"


def want_preload(files: ImageFiles, preload: bool | str) -> bool:
    """Resolve the ``preload`` option: ``True``, ``False`` or ``"auto"`` (small enough for memory)."""
    if preload == "auto":
        return files.nbytes() <= PRELOAD_AUTO_BYTES
    if isinstance(preload, bool):
        return preload
    raise ConfigError(f"preload {preload!r}; expected true, false or auto")


def list_images(folder: Path, depth: int | tuple[int, ...]) -> list[Path]:
    """Image files exactly ``depth`` levels below ``folder`` (1: ``folder/*``; 2: ``folder/*/*``), sorted."""
    depths = (depth,) if isinstance(depth, int) else depth
    found: list[Path] = []
    for d in depths:
        pattern = "/".join(["*"] * d)
        found += [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(found)


# ---------------------------------------------------------------------------------------------- model input
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "none": None,
}


def to_model_input(normalize: str, channels: int = 3) -> list[BatchTransform]:
    """uint8 -> float in [0, 1], then the named per-channel normalisation (``imagenet``, ``cifar10``, ``none``)."""
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize {normalize!r}; expected one of: {', '.join(NORMALIZATIONS)}")
    stats = NORMALIZATIONS[normalize]
    if stats is None:
        return [ToFloat(255.0)]
    if channels != len(stats[0]):
        raise ConfigError(f"normalize={normalize!r} is for 3-channel images; these have {channels}; use none")
    return [ToFloat(255.0), Normalize(*stats)]
