"""Plain-torch *batch* image transforms (no torchvision): each maps an ``(N, C, H, W)`` tensor to another.

They run on whole batches after slicing, so there is no per-item Python in the hot loop. Random transforms
draw from torch's global CPU generator (which the engine checkpoints), so a batch gets the same augmentation
wherever it lives (CPU or GPU) and a resumed run repeats it. Geometric transforms accept any dtype;
``Resize`` and ``RandomResizedCrop`` interpolate in float and round back for integer inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToFloat",
]

Size = int | tuple[int, int]

#: Per-channel statistics for :class:`Normalize`: ImageNet (for ImageNet-pretrained backbones) and the CIFAR-10
#: values used by LfF and DFA (the widespread ``(0.2023, 0.1994, 0.2010)`` stds, kept for comparability).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _check_batch(x: Tensor, who: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{who} expects a batch of shape (N, C, H, W); got shape {tuple(x.shape)}")


def _back_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast an interpolated float tensor back to ``dtype`` (rounded and clamped for integer types)."""
    if dtype.is_floating_point:
        return x.to(dtype)
    info = torch.iinfo(dtype)
    return x.round_().clamp_(info.min, info.max).to(dtype)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if inner else "Compose([])"


class ToFloat:
    """Pixels -> ``float32`` divided by ``scale`` (uint8 0..255 -> [0, 1]). Never modifies its input."""

    def __init__(self, scale: float = 255.0, dtype: torch.dtype = torch.float32) -> None:
        self.scale, self.dtype = float(scale), dtype

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype == self.dtype:
            return x / self.scale
        return x.to(self.dtype).div_(self.scale)

    def __repr__(self) -> str:
        return f"ToFloat(scale={self.scale:g}, dtype={self.dtype})"


class Normalize:
    """``(x - mean) / std`` per channel (channels are dimension -3)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: {len(self.mean)} means but {len(self.std)} stds")
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize: std {self.std} contains 0")

    def __call__(self, x: Tensor) -> Tensor:
        if not x.dtype.is_floating_point:
            raise TypeError(f"Normalize expects a float tensor, got {x.dtype}; put ToFloat() before it")
        if x.ndim < 3 or x.shape[-3] != len(self.mean):
            raise ValueError(f"Normalize has {len(self.mean)} channels; got input of shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomHorizontalFlip:
    """Flip each image left-right with probability ``p`` (independently per image)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p={p} is not a probability")
        self.p = float(p)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, "RandomHorizontalFlip")
        flip = (torch.rand(x.shape[0]) < self.p).to(x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _crop_per_image(x: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Crop an ``h x w`` window at a different (top, left) for every image, by one gather."""
    n = x.shape[0]
    rows = (top.view(-1, 1) + torch.arange(h)).to(x.device)  # (N, h)
    cols = (left.view(-1, 1) + torch.arange(w)).to(x.device)  # (N, w)
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    # advanced indices separated by a slice: the result is (N, h, w, C)
    return x[batch, :, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2).contiguous()


class RandomCrop:
    """Pad by ``padding`` (constant ``fill``, or 'reflect' / 'replicate'), then crop ``size`` at a random
    place per image (the CIFAR recipe: ``RandomCrop(32, padding=4)``)."""

    MODES = ("constant", "reflect", "replicate")

    def __init__(self, size: Size, padding: int = 0, fill: float = 0.0, padding_mode: str = "constant"):
        if padding_mode not in self.MODES:
            raise ValueError(f"RandomCrop: padding_mode {padding_mode!r}; expected one of {self.MODES}")
        self.size, self.padding, self.fill, self.padding_mode = _pair(size), int(padding), fill, padding_mode

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, "RandomCrop")
        if self.padding:
            p = [self.padding] * 4
            if self.padding_mode == "constant":
                x = F.pad(x, p, value=self.fill)
            else:
                x = _back_to(F.pad(x.float(), p, mode=self.padding_mode), x.dtype)
        h, w = self.size
        H, W = x.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"RandomCrop: crop {h}x{w} is larger than the (padded) image {H}x{W}")
        n = x.shape[0]
        top = torch.randint(0, H - h + 1, (n,))
        left = torch.randint(0, W - w + 1, (n,))
        return _crop_per_image(x, top, left, h, w)

    def __repr__(self) -> str:
        mode = "" if self.padding_mode == "constant" else f", padding_mode={self.padding_mode!r}"
        return f"RandomCrop(size={self.size}, padding={self.padding}{mode})"


class Resize:
    """Resize with ``F.interpolate`` (antialiased bilinear by default). An int resizes the shorter side to it,
    keeping the aspect ratio; ``(h, w)`` resizes to exactly that."""

    def __init__(self, size: Size, mode: str = "bilinear", antialias: bool = True) -> None:
        self.size, self.mode = size, mode
        self.antialias = antialias and mode in ("bilinear", "bicubic")

    def _target(self, H: int, W: int) -> tuple[int, int]:
        if isinstance(self.size, int):
            if H <= W:
                return self.size, max(1, int(self.size * W / H))
            return max(1, int(self.size * H / W)), self.size
        return _pair(self.size)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, "Resize")
        out = self._target(*x.shape[-2:])
        if tuple(x.shape[-2:]) == out:
            return x
        kw = {} if self.mode == "nearest" else {"align_corners": False}
        y = F.interpolate(x.float(), size=out, mode=self.mode, antialias=self.antialias, **kw)
        return _back_to(y, x.dtype)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, mode={self.mode!r}, antialias={self.antialias})"


class CenterCrop:
    """Crop the central ``size`` window (zero-padding first where the image is smaller)."""

    def __init__(self, size: Size) -> None:
        self.size = _pair(size)

    def __call__(self, x: Tensor) -> Tensor:
        h, w = self.size
        H, W = x.shape[-2:]
        if h > H or w > W:
            ph, pw = max(0, h - H), max(0, w - W)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            H, W = x.shape[-2:]
        top, left = (H - h) // 2, (W - w) // 2
        return x[..., top : top + h, left : left + w]

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomResizedCrop:
    """Crop a random area fraction ``scale`` with aspect ratio in ``ratio`` per image, resized to ``size``.

    Boxes are drawn as in the usual ImageNet recipe (10 tries per image, then a central crop); the crops are
    resampled bilinearly in one ``grid_sample`` call for the whole batch. Unlike ``Resize`` this does not
    antialias, which matters only for crops much larger than ``size``.
    """

    def __init__(
        self,
        size: Size,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        tries: int = 10,
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            need = "0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]"
            raise ValueError(f"RandomResizedCrop: need {need}; got scale={scale}, ratio={ratio}")
        self.size, self.scale, self.ratio, self.tries = _pair(size), tuple(scale), tuple(ratio), int(tries)

    def boxes(self, n: int, H: int, W: int) -> Tensor:
        """``(n, 4)`` float boxes ``(top, left, h, w)`` in pixels, drawn from torch's global generator."""
        area = H * W
        t = self.tries
        target = area * torch.empty(n, t).uniform_(*self.scale)
        log_r = torch.empty(n, t).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(log_r)
        w = torch.sqrt(target * aspect).round()
        h = torch.sqrt(target / aspect).round()
        ok = (w > 0) & (h > 0) & (w <= W) & (h <= H)
        u_top, u_left = torch.rand(n, t), torch.rand(n, t)
        top = torch.floor(u_top * (H - h + 1))
        left = torch.floor(u_left * (W - w + 1))
        # first valid try per image; none valid -> central crop with the aspect ratio clamped into range
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
        pick = first.clamp(min=0).view(-1, 1)
        box = torch.stack([g.gather(1, pick).squeeze(1) for g in (top, left, h, w)], dim=1)
        r = W / H
        if r < self.ratio[0]:
            cw, ch = W, round(W / self.ratio[0])
        elif r > self.ratio[1]:
            ch, cw = H, round(H * self.ratio[1])
        else:
            cw, ch = W, H
        fallback = torch.tensor([(H - ch) // 2, (W - cw) // 2, ch, cw], dtype=box.dtype)
        return torch.where((first < 0).view(-1, 1), fallback, box)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, "RandomResizedCrop")
        n, _, H, W = x.shape
        top, left, h, w = self.boxes(n, H, W).unbind(1)
        oh, ow = self.size
        # pixel-centre sampling positions in normalised [-1, 1] coordinates (align_corners=False)
        ys = top.view(-1, 1) + (torch.arange(oh) + 0.5).view(1, -1) * (h / oh).view(-1, 1)
        xs = left.view(-1, 1) + (torch.arange(ow) + 0.5).view(1, -1) * (w / ow).view(-1, 1)
        gy = (2 * ys / H - 1).view(n, oh, 1).expand(n, oh, ow)
        gx = (2 * xs / W - 1).view(n, 1, ow).expand(n, oh, ow)
        grid = torch.stack([gx, gy], dim=-1).to(x.device)
        src = x if x.dtype.is_floating_point else x.float()
        grid = grid.to(src.dtype)
        y = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return _back_to(y, x.dtype)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"
