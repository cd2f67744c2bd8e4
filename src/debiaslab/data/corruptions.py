"""The ten "type 0" corruptions of Corrupted CIFAR-10 (LfF) at CIFAR-10-C severity 5, in numpy and Pillow.

Snow, Frost, Fog, Brightness, Contrast, Spatter, Elastic, JPEG, Pixelate, Saturate, with the severity-5
constants of CIFAR-10-C (Hendrycks & Dietterich 2019; LfF's "Severity4" folders call ``corrupt(x, 4 + 1)``).
Written from the published algorithms without OpenCV, scikit-image or ImageMagick, so results follow the
same recipe but are not bit-identical to the released files:

- Snow's motion blur follows ImageMagick's one-sided Gaussian streak (kernel width ``2 * ceil(radius) + 1``,
  offsets rounded along the angle, edge pixels repeated).
- Elastic resamples bilinearly in floating point (OpenCV uses 5-bit fixed-point weights).
- Frost blends crops of texture photographs (the ``frost1.png .. frost5.jpg`` files shipped with the
  ImageNet-C code). Without them, :func:`synthetic_frost_textures` makes a procedural substitute: the
  dataset then says so in its recipe and notes, and it is not the published Frost.
- JPEG (quality 40) and Pixelate (box down/up-sampling to 65 %) go through Pillow exactly as the reference.

Every function maps uint8 ``(N, H, W, 3)`` to uint8 ``(N, H, W, 3)``, draws from the given generator, and
truncates to uint8 as the reference does (``astype(np.uint8)`` of values in [0, 255]).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from debiaslab.errors import DataError

#: The type-0 corruptions in LfF's order: corruption k is the bias-aligned corruption of class k.
CORRUPTIONS: tuple[str, ...] = (
    "snow", "frost", "fog", "brightness", "contrast", "spatter", "elastic", "jpeg", "pixelate", "saturate",
)  # fmt: skip
#: Texture files of the reference Frost (it draws among the first five).
FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FROST_SCALE = 0.2  # the reference shrinks each texture photo to 20 % before cropping

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------------------------------------- helpers
def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return (np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _fold(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Integer indices folded into ``0..n-1``: ``edge`` (clamp), ``symmetric`` (scipy 'reflect': d c b a |
    a b c d) or ``reflect101`` (OpenCV BORDER_REFLECT_101: d c b | a b c d)."""
    if mode == "edge" or n == 1:
        return np.clip(idx, 0, n - 1)
    if mode == "symmetric":
        m = np.mod(idx, 2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m)
    if mode == "reflect101":
        m = np.mod(idx, 2 * n - 2)
        return np.where(m >= n, 2 * n - 2 - m, m)
    raise ValueError(f"unknown border mode {mode!r}")


def _bilinear(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Sample ``img`` (N, H, W, C) at float ``rows``/``cols`` (N, H', W'), folding borders by ``mode``."""
    n, h, w, _ = img.shape
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    r1, c1 = _fold(r0 + 1, h, mode), _fold(c0 + 1, w, mode)
    r0, c0 = _fold(r0, h, mode), _fold(c0, w, mode)
    b = np.arange(n).reshape(n, 1, 1)
    top = img[b, r0, c0] * (1 - fc) + img[b, r0, c1] * fc
    bottom = img[b, r1, c0] * (1 - fc) + img[b, r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def gaussian_filter(a: np.ndarray, sigma: float, *, truncate: float = 4.0, mode: str = "edge") -> np.ndarray:
    """Gaussian blur of each ``(H, W)`` map in ``a`` (N, H, W), as scipy's ``gaussian_filter`` (kernel radius
    ``int(truncate * sigma + 0.5)``); ``mode``: ``edge`` (scipy 'nearest') or ``symmetric`` (scipy 'reflect')."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = np.asarray(a, dtype=np.float64)
    for axis in (1, 2):
        n = out.shape[axis]
        src = np.take(out, _fold(np.arange(-radius, n + radius), n, mode), axis=axis)
        acc = np.zeros_like(out)
        for j, kj in enumerate(k):
            acc += kj * np.take(src, np.arange(j, j + n), axis=axis)
        out = acc
    return out


def _clipped_zoom(a: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of each ``(H, W)`` map in ``a`` by ``factor`` (bilinear, corners aligned as scipy's
    ``zoom(order=1)``) and trim back to ``(H, W)``."""
    _, h, w = a.shape
    ch = math.ceil(h / factor)
    top = (h - ch) // 2
    crop = a[:, top : top + ch, top : top + ch]
    out_n = round(ch * factor)
    pos = np.arange(out_n) * ((ch - 1) / (out_n - 1)) if out_n > 1 else np.zeros(1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, ch - 1)
    i1 = np.clip(i0 + 1, 0, ch - 1)
    f = pos - i0
    rows = crop[:, i0, :] * (1 - f)[None, :, None] + crop[:, i1, :] * f[None, :, None]
    zoomed = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i1] * f[None, None, :]
    trim = (out_n - h) // 2
    return zoomed[:, trim : trim + h, trim : trim + w]


def plasma_fractal(n: int, size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` diamond-square height maps ``(size, size)`` in [0, 1] (``size`` a power of two), as the fog of
    CIFAR-10-C: the perturbation starts at 100 (scaled by 100 again) and is divided by ``decay`` per level."""
    if size & (size - 1):
        raise ValueError(f"plasma size {size} is not a power of two")
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        m[:, half:size:step, half:size:step] = noisy_mean(squares)
        centres = m[:, half:size:step, half:size:step]
        corners = m[:, 0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, 0:size:step, half:size:step] = noisy_mean(left)
        up = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half:size:step, 0:size:step] = noisy_mean(up)
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def motion_blur(a: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick-style motion blur of each ``(H, W)`` map: a one-sided Gaussian streak of width
    ``2 * ceil(radius) + 1`` along ``angles`` (degrees, one per map); edge pixels repeat."""
    n, h, w = a.shape
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * sigma**2))
    k /= k.sum()
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64))
    dx = np.ceil(i[None, :] * np.cos(theta)[:, None] - 0.5).astype(np.int64)  # (n, width)
    dy = np.ceil(i[None, :] * np.sin(theta)[:, None] - 0.5).astype(np.int64)
    b = np.arange(n).reshape(n, 1, 1)
    rows = np.arange(h).reshape(1, h, 1)
    cols = np.arange(w).reshape(1, 1, w)
    out = np.zeros((n, h, w))
    for j in range(width):
        r = np.clip(rows + dy[:, j].reshape(n, 1, 1), 0, h - 1)
        c = np.clip(cols + dx[:, j].reshape(n, 1, 1), 0, w - 1)
        out += k[j] * a[b, r, c]
    return out


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (..., 3) -> HSV in [0, 1], as scikit-image (hue 0 and saturation 0 for greys)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    delta = v - x.min(-1)
    safe = np.where(delta == 0, 1.0, delta)
    s = np.where(v == 0, 0.0, delta / np.where(v == 0, 1.0, v))
    h = np.where(r == v, (g - b) / safe, 0.0)
    h = np.where(g == v, 2.0 + (b - r) / safe, h)
    h = np.where(b == v, 4.0 + (r - g) / safe, h)
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(x.shape)
    for c in range(3):
        out[..., c] = np.choose(sector, [ch[c] for ch in choices])
    return out


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix A with ``dst = A @ [x, y, 1]`` for three point pairs (OpenCV's getAffineTransform)."""
    design = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(design, dst).T


# ---------------------------------------------------------------------------------------------- corruptions
def snow(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, keep = 0.3, 0.3, 1.25, 0.65, 14, 12, 0.8
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    layer = _clipped_zoom(rng.normal(loc, scale, size=(n, h, w)), zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    layer = motion_blur(layer, radius, sigma, rng.uniform(-135, -45, size=n))
    layer = np.clip(np.rint(layer), 0, 255)[..., None] / 255.0  # ImageMagick writes 8-bit pixels
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return _to_uint8(x + layer + np.rot90(layer, 2, axes=(1, 2)))


def fog(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    strength, decay = 1.5, 1.75
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    size = 1 << (max(h, w, 2) - 1).bit_length()  # the smallest power of two that covers the image
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * plasma_fractal(n, size, decay, rng)[:, :h, :w, None]
    return _to_uint8(x * peak / (peak + strength))


def brightness(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = rgb_to_hsv(images.astype(np.float64) / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    return _to_uint8(hsv_to_rgb(hsv))


def contrast(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((x - means) * 0.15 + means)


def saturate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = rgb_to_hsv(images.astype(np.float64) / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5 + 0.2, 0, 1)
    return _to_uint8(hsv_to_rgb(hsv))


def spatter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Severity 5 is the "mud" variant: brown blotches where a blurred noise field is high."""
    loc, scale, sigma, threshold, sigma2 = 0.65, 0.1, 0.5, 0.68, 0.6
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    liquid = gaussian_filter(rng.normal(loc, scale, size=(n, h, w)), sigma)
    liquid[liquid < threshold] = 0
    mask = gaussian_filter((liquid > threshold).astype(np.float64), sigma2)
    mask[mask < 0.8] = 0
    mud = np.array([63, 42, 20], dtype=np.float64) / 255.0
    return _to_uint8(x * (1 - mask[..., None]) + mud * mask[..., None])


def elastic(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (corner jitter 0.03 * size, mirrored borders) then a smooth random displacement
    field (Gaussian-blurred uniform noise, sigma 0.03 * size, amplitude 0.1 * size)."""
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    alpha, sigma, jitter = 0.1 * h, 0.03 * h, 0.03 * h
    centre = np.array([h, w], dtype=np.float32) // 2
    square = min(h, w) // 3
    src = np.array([centre + square, [centre[0] + square, centre[1] - square], centre - square], dtype=np.float64)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    warped_r = np.empty((n, h, w))
    warped_c = np.empty((n, h, w))
    for i in range(n):
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        forward = np.vstack([_affine_from_points(src, dst), [0.0, 0.0, 1.0]])
        inv = np.linalg.inv(forward)  # destination pixel (x = col, y = row) -> source position
        warped_c[i] = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
        warped_r[i] = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
    x = _bilinear(x, warped_r, warped_c, "reflect101")
    dx = gaussian_filter(rng.uniform(-1, 1, size=(n, h, w)), sigma, truncate=3, mode="symmetric") * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, size=(n, h, w)), sigma, truncate=3, mode="symmetric") * alpha
    x = _bilinear(x, rows[None] + dy, cols[None] + dx, "symmetric")
    return _to_uint8(x)


def jpeg(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=40)
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def pixelate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(images)
    h, w = images.shape[1:3]
    small = (int(w * 0.65), int(h * 0.65))
    for i, img in enumerate(images):
        im = Image.fromarray(img).resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX)
        out[i] = np.asarray(im)
    return out


class Frost:
    """Frost: ``0.75 * image + 0.45 * texture crop`` with the crop drawn from one of the texture images."""

    def __init__(self, textures: Sequence[np.ndarray]) -> None:
        if not textures:
            raise ValueError("Frost needs at least one texture")
        self.textures = [np.asarray(t, dtype=np.uint8) for t in textures]

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w, _ = images.shape
        out = np.empty(images.shape, dtype=np.float64)
        for i in range(n):
            tex = self.textures[int(rng.integers(len(self.textures)))]
            if tex.shape[0] <= h or tex.shape[1] <= w:
                raise DataError(f"frost texture of size {tex.shape[:2]} is too small to crop {h}x{w} from")
            top = int(rng.integers(0, tex.shape[0] - h))
            left = int(rng.integers(0, tex.shape[1] - w))
            crop = tex[top : top + h, left : left + w].astype(np.float64)
            out[i] = 0.75 * images[i] + 0.45 * crop
        return np.clip(out, 0, 255).astype(np.uint8)


def load_frost_textures(folder: Path) -> list[np.ndarray]:
    """The reference's texture photos from ``folder``, shrunk to 20 % (bilinear, as OpenCV's resize)."""
    textures = []
    for name in FROST_FILES:
        path = folder / name
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float64)
        except FileNotFoundError:
            raise DataError(f"frost texture {path} is missing; expected {', '.join(FROST_FILES)}") from None
        except OSError as exc:
            raise DataError(f"cannot decode frost texture {path}: {exc}") from exc
        h, w = arr.shape[:2]
        oh, ow = max(1, round(h * FROST_SCALE)), max(1, round(w * FROST_SCALE))
        rows = np.clip((np.arange(oh) + 0.5) * (h / oh) - 0.5, 0, h - 1)
        cols = np.clip((np.arange(ow) + 0.5) * (w / ow) - 0.5, 0, w - 1)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        small = _bilinear(arr[None], r[None], c[None], "edge")[0]
        textures.append(np.clip(np.rint(small), 0, 255).astype(np.uint8))
    return textures


def synthetic_frost_textures(rng: np.random.Generator, count: int = 5, size: int = 96) -> list[np.ndarray]:
    """A documented *substitute* for the frost photos: pale blue-white plasma clouds crossed by thin bright
    crystal streaks. Not CIFAR-10-C's Frost; used only when asked for (``frost="synthetic"``)."""
    clouds = plasma_fractal(count, 128, 2.0, rng)[:, :size, :size]
    streaks = np.zeros((count, size, size))
    for i in range(count):
        for _ in range(60):
            r0, c0 = rng.uniform(0, size, 2)
            angle, length = rng.uniform(0, np.pi), rng.uniform(4, 16)
            t = np.linspace(0, length, int(length * 2))
            rr = np.clip((r0 + t * np.sin(angle)).astype(int), 0, size - 1)
            cc = np.clip((c0 + t * np.cos(angle)).astype(int), 0, size - 1)
            streaks[i, rr, cc] = 1.0
    streaks = gaussian_filter(streaks, 0.7) * 3.0
    value = np.clip(0.35 + 0.35 * clouds + 0.6 * streaks, 0, 1)
    tint = np.array([0.86, 0.93, 1.0])
    return [(value[i, :, :, None] * tint * 255).astype(np.uint8) for i in range(count)]


def corruption_functions(frost_textures: Sequence[np.ndarray]) -> dict[str, Corruption]:
    """Name -> function for the ten type-0 corruptions (Frost with the given textures)."""
    return {
        "snow": snow,
        "frost": Frost(frost_textures),
        "fog": fog,
        "brightness": brightness,
        "contrast": contrast,
        "spatter": spatter,
        "elastic": elastic,
        "jpeg": jpeg,
        "pixelate": pixelate,
        "saturate": saturate,
    }
