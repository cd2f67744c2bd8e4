"""Batch transforms: exact results on small tensors, per-image randomness from torch's global generator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToFloat,
)


def batch(n: int = 8, c: int = 3, h: int = 12, w: int = 10, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), generator=g).to(dtype)


def seeded(t, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return t(x)


def test_to_float_scales_and_leaves_input_alone() -> None:
    x = batch()
    y = ToFloat()(x)
    assert y.dtype == torch.float32 and float(y.max()) <= 1.0
    torch.testing.assert_close(y, x.double().div(255).float())
    xf = x.float()
    before = xf.clone()
    ToFloat()(xf)
    assert torch.equal(xf, before)
    assert "scale=255" in repr(ToFloat())


def test_normalize_per_channel() -> None:
    x = torch.rand(4, 3, 5, 5)
    y = Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])(x)
    for c, (m, s) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)]):
        torch.testing.assert_close(y[:, c], (x[:, c] - m) / s)
    with pytest.raises(TypeError, match="ToFloat"):
        Normalize([0.0] * 3, [1.0] * 3)(batch())
    with pytest.raises(ValueError, match="3 channels"):
        Normalize([0.0] * 3, [1.0] * 3)(torch.rand(2, 1, 4, 4))


def test_compose_applies_in_order_and_reads_well() -> None:
    t = Compose([ToFloat(), Normalize([0.5] * 3, [0.5] * 3)])
    x = batch()
    torch.testing.assert_close(t(x), x.float() / 255 * 2 - 1)
    assert repr(t).startswith("Compose([") and "ToFloat" in repr(t) and "Normalize" in repr(t)


def test_horizontal_flip_per_image() -> None:
    x = batch(n=64)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    y = seeded(RandomHorizontalFlip(0.5), x)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert torch.all(flipped | kept) and 10 < int(flipped.sum()) < 54  # independent per image
    assert torch.equal(seeded(RandomHorizontalFlip(0.5), x), y)  # global RNG: reproducible
    assert y.dtype == torch.uint8


def test_random_crop_takes_a_window_of_the_padded_image() -> None:
    x = batch(n=16, h=8, w=8)
    t = RandomCrop(8, padding=2)
    y = seeded(t, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    padded = F.pad(x, [2, 2, 2, 2])
    offsets = set()
    for i in range(len(x)):
        windows = [(a, b) for a in range(5) for b in range(5)]
        hits = [(a, b) for a, b in windows if torch.equal(padded[i, :, a : a + 8, b : b + 8], y[i])]
        assert hits, f"image {i} is not a crop of its padded input"
        offsets.add(hits[0])
    assert len(offsets) > 3  # different place per image
    assert torch.equal(seeded(t, x), y)
    assert torch.equal(RandomCrop(8)(x), x)  # no padding, full size: identity
    reflect = seeded(RandomCrop(8, padding=2, padding_mode="reflect"), x.float())
    assert reflect.shape == x.shape
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(20)(x)


def test_resize_shapes_dtype_and_antialias() -> None:
    x = batch(h=12, w=16)
    y = Resize(6)(x)  # shorter side -> 6, aspect kept
    assert y.shape == (8, 3, 6, 8) and y.dtype == torch.uint8
    yf = Resize((6, 8))(x.float())
    torch.testing.assert_close(yf, F.interpolate(x.float(), size=(6, 8), mode="bilinear", antialias=True))
    torch.testing.assert_close(y.float(), yf.round().clamp(0, 255))
    const = torch.full((2, 3, 12, 16), 77, dtype=torch.uint8)
    assert torch.equal(Resize((5, 7))(const), torch.full((2, 3, 5, 7), 77, dtype=torch.uint8))
    assert Resize((12, 16))(x) is x


def test_center_crop() -> None:
    x = batch(h=12, w=10)
    assert torch.equal(CenterCrop((6, 4))(x), x[:, :, 3:9, 3:7])
    padded = CenterCrop(14)(x)
    assert padded.shape == (8, 3, 14, 14) and torch.equal(padded[:, :, 1:13, 2:12], x)


def test_random_resized_crop() -> None:
    x = batch(n=32, h=16, w=16).float()
    full = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(full(x), x)  # the whole image at its own size: exact identity
    t = RandomResizedCrop(8)
    y = seeded(t, x)
    assert y.shape == (32, 3, 8, 8)
    assert torch.equal(seeded(t, x), y) and not torch.equal(seeded(t, x, seed=1), y)
    torch.manual_seed(0)
    boxes = t.boxes(1000, 16, 20)
    top, left, h, w = boxes.unbind(1)
    assert torch.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1) & (top + h <= 16) & (left + w <= 20))
    area = h * w / (16 * 20)
    assert float(area.min()) >= 0.05 and float(area.max()) <= 1.0
    # impossible aspect ratios fall back to a central crop
    fallback = RandomResizedCrop(4, scale=(0.9, 1.0), ratio=(8.0, 9.0)).boxes(3, 16, 16)
    assert fallback.tolist() == [[7.0, 0.0, 2.0, 16.0]] * 3
    assert seeded(RandomResizedCrop(8), batch(n=4)).dtype == torch.uint8
