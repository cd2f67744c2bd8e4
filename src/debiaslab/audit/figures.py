"""The audit's PNG figures: group counts, the reference's hardest and easiest images per class, saliency maps, and
per-group validation accuracy.

matplotlib is the optional extra ``plots`` (the same check and message as :mod:`debiaslab.bench.plots`). Figures
use the object API on the Agg canvas; image grids have a fixed size in pixels (:func:`grid_px`), and are written
atomically as 256-colour PNGs, so committed pages stay small.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from debiaslab.bench.plots import PLOTS_MISSING, matplotlib_available
from debiaslab.data.core import GroupDataset
from debiaslab.errors import ConfigError
from debiaslab.utils.io import atomic_write

DPI = 100
PANEL_IN = 0.5  # side of one image panel (with its padding), inches
MARGIN_IN = (0.9, 0.6, 0.05)  # left (row labels), top (title and column titles), bottom
MINORITY_RGB = (0.89, 0.0, 0.17)
SALIENCY_CMAP = "inferno"


def require_matplotlib() -> None:
    if not matplotlib_available():
        raise ConfigError(PLOTS_MISSING)


def panel_pad(side: int) -> int:
    """Pixels of padding around each panel of a grid of images ``side`` pixels high: room for a red frame set
    apart from the image by a white line (so it shows on a red image too)."""
    return max(4, round(0.14 * side))


def grid_px(rows: int, cols: int, hw: tuple[int, int], group: int = 0) -> tuple[int, int]:
    """Width and height in pixels of an image-grid figure: ``rows`` x ``cols`` panels of ``hw`` pixels, a
    wider gap after every ``group`` columns (0: none)."""
    mosaic_w, mosaic_h = _mosaic_size(rows, cols, hw, group)
    scale = PANEL_IN * DPI / (hw[0] + 2 * panel_pad(hw[0]))
    width = MARGIN_IN[0] * DPI + mosaic_w * scale
    height = (MARGIN_IN[1] + MARGIN_IN[2]) * DPI + mosaic_h * scale
    return round(width), round(height)


def _figure(width_px: int, height_px: int, layout: str | None = "constrained") -> Any:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)


def save_png(fig: Any, path: Path) -> Path:
    """Render on the Agg canvas, reduce to 256 colours (no dithering) and write atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


# ---------------------------------------------------------------------------------------------- pixels
def display_images(data: GroupDataset, index: Tensor) -> Tensor:
    """The examples ``index`` as ``(n, H, W, 3)`` RGB in [0, 1]: stored uint8 pixels as they are, other inputs
    (normalised images) stretched to [0, 1] per image; one channel is shown grey, other counts as their mean."""
    index = torch.as_tensor(index, dtype=torch.long)
    shape = tuple(data.input_shape)
    raw = data.x[index] if data.x is not None else None
    if raw is not None and raw.dtype == torch.uint8 and tuple(raw.shape[1:]) == shape:
        x = raw.float() / 255.0
    else:
        x = data.inputs(index).float().cpu()
        flat = x.flatten(1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        scale = (hi - lo).clamp_min(1e-8)
        x = ((flat - lo[:, None]) / scale[:, None]).reshape(x.shape)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[1] != 3:
        x = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def scaled(maps: Tensor, q: float = 0.99) -> Tensor:
    """``maps`` divided by their joint ``q`` quantile and clipped to [0, 1] (one outlier pixel would otherwise
    leave the rest of a saliency map black)."""
    top = torch.quantile(maps.flatten().float(), q) if maps.numel() else torch.tensor(1.0)
    return (maps / top.clamp_min(1e-12)).clamp(0, 1)


def _mosaic_size(rows: int, cols: int, hw: tuple[int, int], group: int) -> tuple[int, int]:
    pad = panel_pad(hw[0])
    gaps = (cols - 1) // group if group else 0
    return cols * (hw[1] + 2 * pad) + gaps * 2 * pad, rows * (hw[0] + 2 * pad)


def _panel_origin(r: int, c: int, hw: tuple[int, int], group: int) -> tuple[int, int]:
    """Top-left pixel (x, y) of panel (r, c)'s image inside the mosaic."""
    pad = panel_pad(hw[0])
    gap = (c // group) * 2 * pad if group else 0
    return c * (hw[1] + 2 * pad) + gap + pad, r * (hw[0] + 2 * pad) + pad


def image_grid(
    panels: Tensor,
    path: Path,
    *,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str] = (),
    frames: Tensor | None = None,
    group: int = 0,
) -> Path:
    """Draw ``(rows, cols, H, W, 3)`` RGB panels in [0, 1] (NaN: empty) as one mosaic image with labels: one
    ``imshow`` however many panels (fast, and small files). ``frames`` (bool ``(rows, cols)``) marks panels with
    a red frame; ``col_labels`` go above the first row."""
    import numpy as np

    rows, cols, h, w = panels.shape[:4]
    pad = panel_pad(h)
    mosaic_w, mosaic_h = _mosaic_size(rows, cols, (h, w), group)
    canvas = np.ones((mosaic_h, mosaic_w, 3), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            panel = panels[r, c]
            if torch.isnan(panel).any():
                continue
            x, y = _panel_origin(r, c, (h, w), group)
            if frames is not None and bool(frames[r, c]):
                f, gap = pad - 1, max(1, pad // 4)
                canvas[y - f : y + h + f, x - f : x + w + f] = MINORITY_RGB
                canvas[y - gap : y + h + gap, x - gap : x + w + gap] = 1.0
            canvas[y : y + h, x : x + w] = panel.numpy()
    width, height = grid_px(rows, cols, (h, w), group)
    fig = _figure(width, height, layout=None)
    ax = fig.add_axes(
        (
            MARGIN_IN[0] * DPI / width,
            MARGIN_IN[2] * DPI / height,
            1 - MARGIN_IN[0] * DPI / width,
            1 - (MARGIN_IN[1] + MARGIN_IN[2]) * DPI / height,
        )
    )
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, label in enumerate(row_labels):
        ax.text(-pad, r * (h + 2 * pad) + pad + h / 2, label, ha="right", va="center", fontsize=7)
    for c, label in enumerate(col_labels):
        x, y = _panel_origin(0, c, (h, w), group)
        ax.text(x + w / 2, y - pad, label, ha="center", va="bottom", fontsize=6)
    fig.suptitle(title, fontsize=8, y=1 - 0.04 * DPI / height)
    return save_png(fig, path)


def heat_rgb(maps: Tensor) -> Tensor:
    """Magnitude maps ``(..., H, W)`` in [0, 1] as RGB ``(..., H, W, 3)`` in the heat colours (NaN stays NaN)."""
    from matplotlib import colormaps

    values = maps.float()
    rgb = torch.from_numpy(colormaps[SALIENCY_CMAP](values.nan_to_num(0).clamp(0, 1).numpy())[..., :3]).float()
    return torch.where(torch.isnan(values)[..., None], torch.full_like(rgb, float("nan")), rgb)


# ---------------------------------------------------------------------------------------------- figures
def counts_figure(counts: dict[str, Tensor], names: Sequence[str], title: str, path: Path) -> Path:
    """One heatmap per split of examples per class (rows) and group (columns), counts written in the cells;
    colours on a log scale, so a group of 6 next to one of 5 000 still shows."""
    from matplotlib.colors import LogNorm

    n_classes, n_groups = next(iter(counts.values())).shape
    top = max(2.0, max(float(t.max()) for t in counts.values()) + 1)
    cell_w, cell_h = (0.42 if n_groups > 2 else 0.9), 0.3
    width = round((1.0 + len(counts) * (n_groups * cell_w + 0.9)) * DPI)
    height = round((1.2 + n_classes * cell_h) * DPI)
    fig = _figure(width, height)
    axes = fig.subplots(1, len(counts), squeeze=False)[0]
    for ax, (split, table) in zip(axes, counts.items()):
        values = table.double().numpy()
        image = ax.imshow(values + 1, norm=LogNorm(vmin=1, vmax=top), cmap="Blues", aspect="auto")
        for c in range(n_classes):
            for g in range(n_groups):
                v = int(values[c, g])
                dark = v + 1 > math.sqrt(top)
                ax.text(g, c, str(v), ha="center", va="center", fontsize=6, color="white" if dark else "black")
        _group_axes(ax, names, n_classes)
        ax.set_title(f"{split} (n={int(values.sum())})", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def examples_figure(
    images: Tensor,
    minority: Tensor,
    k: int,
    path: Path,
    *,
    minority_label: str,
) -> Path:
    """Rows = classes; the ``k`` training images the reference finds hardest (highest loss), then the ``k``
    easiest. ``images`` is ``(n_classes, 2k, H, W, 3)`` (NaN where a class has fewer images), ``minority``
    ``(n_classes, 2k)``: those get a red frame."""
    n_classes = images.shape[0]
    return image_grid(
        images,
        path,
        title=f"the training images of highest (left) and lowest (right) loss under the biased reference\n"
        f"red frame: {minority_label}",
        row_labels=[f"class {c}" for c in range(n_classes)],
        col_labels=[f"hardest {j + 1}" for j in range(k)] + [f"easiest {j + 1}" for j in range(k)],
        frames=minority,
        group=k,
    )


def signed_rgb(grads: Tensor, *, per_item: bool, q: float = 0.9) -> Tensor:
    """Signed gradients ``(n, C, H, W)`` as ``(n, H, W, 3)`` images: mid-grey is 0; three channels are shown as
    the colour ``0.5 + 0.5 · g / s`` (the colour change that raises the score), other channel counts as their
    mean on a blue-white-red scale. ``s`` is the ``q`` quantile of ``|g|``, per item or over all of them."""
    g = grads.float()
    if g.dim() == 3:
        g = g.unsqueeze(1)
    flat = g.abs().flatten(1)
    if not flat.numel():
        s = torch.ones(g.shape[0])
    elif per_item:
        s = torch.quantile(flat, q, dim=1)
    else:
        s = torch.quantile(flat.flatten(), q).expand(g.shape[0])
    g = (g / s.clamp_min(1e-12).reshape(-1, 1, 1, 1)).clamp(-1, 1)
    if g.shape[1] == 3:
        return (0.5 + 0.5 * g).permute(0, 2, 3, 1).contiguous()
    from matplotlib import colormaps

    values = (0.5 + 0.5 * g.mean(dim=1)).numpy()
    return torch.from_numpy(colormaps["RdBu_r"](values)[..., :3]).float()


def mean_saliency_figure(mean_images: Tensor, rows: dict[str, Tensor], path: Path, *, split: str) -> Path:
    """Columns = classes; the first row is the mean image of the examples used, then one row per entry of
    ``rows``, each ``(n_classes, H, W, 3)`` RGB (:func:`heat_rgb` magnitude maps, :func:`signed_rgb` gradients)."""
    n_classes = mean_images.shape[0]
    panels = torch.stack([mean_images, *rows.values()])
    return image_grid(
        panels,
        path,
        title=f"true-class input gradient g, mean per class over {split} examples:\n|g| (where the model reads; "
        "heat colours) and g itself (which way; grey = 0)",
        row_labels=["mean image", *rows],
        col_labels=[f"class {c}" for c in range(n_classes)],
    )


def example_saliency_figure(
    images: Tensor, maps: dict[str, Tensor], minority: Tensor, labels: Sequence[str], path: Path
) -> Path:
    """Rows = classes; for each example (``labels`` name them, e.g. "hardest 1"), its image and then each
    model's panel. ``images`` and every ``maps`` value are ``(n_classes, m, H, W, 3)`` RGB (NaN: no example)."""
    n_classes, m = images.shape[:2]
    per = 1 + len(maps)
    panels = torch.stack([images, *maps.values()], dim=2).flatten(1, 2)  # (n_classes, m * per, H, W, 3)
    frames = torch.zeros(n_classes, m * per, dtype=torch.bool)
    frames[:, ::per] = minority
    col_labels = [name for label in labels for name in (label, *maps)]
    return image_grid(
        panels,
        path,
        title="training images and each model's input gradient g (grey = 0); red frame: minority",
        row_labels=[f"class {c}" for c in range(n_classes)],
        col_labels=col_labels,
        frames=frames,
        group=per,
    )


def feature_saliency_figure(maps: dict[str, Tensor], path: Path) -> Path:
    """Inputs that are not images: per model, a classes x features heatmap of the mean |input gradient|."""
    n_classes, n_features = next(iter(maps.values())).shape
    width = round((1.2 + min(12.0, 0.05 * n_features + 3.5)) * DPI)
    height = round((0.8 + len(maps) * (0.25 * n_classes + 0.6)) * DPI)
    fig = _figure(width, height)
    axes = fig.subplots(len(maps), 1, squeeze=False)[:, 0]
    for ax, (label, class_maps) in zip(axes, maps.items()):
        ax.imshow(
            scaled(class_maps).numpy(), cmap=SALIENCY_CMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        ax.set_yticks(range(n_classes), [str(c) for c in range(n_classes)], fontsize=7)
        ax.set_ylabel(f"{label}\nclass", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("input feature", fontsize=8)
    fig.suptitle("mean |input gradient| of the true-class logit per class", fontsize=9)
    return save_png(fig, path)


def group_accuracy_figure(
    matrices: dict[str, list[list[float]]], counts: Tensor, names: Sequence[str], path: Path, *, split: str
) -> Path:
    """One heatmap per model of its accuracy (%) per class (rows) and group (columns) on ``split``; empty groups
    grey, groups of fewer than 10 examples marked with a dot."""
    import numpy as np

    n_classes, n_groups = counts.shape
    cell_w = 0.42 if n_groups > 2 else 0.9
    width = round(max(4.5, 1.0 + len(matrices) * (n_groups * cell_w + 0.9)) * DPI)
    height = round((1.2 + n_classes * 0.3) * DPI)
    fig = _figure(width, height)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (label, matrix) in zip(axes, matrices.items()):
        values = 100.0 * np.array(matrix, dtype=float)
        shown = np.ma.masked_invalid(values)
        cmap = _cmap("RdYlGn")
        image = ax.imshow(shown, vmin=0, vmax=100, cmap=cmap, aspect="auto")
        for c in range(n_classes):
            for g in range(n_groups):
                if math.isnan(values[c, g]):
                    continue
                few = "·" if int(counts[c, g]) < 10 else ""
                ax.text(g, c, f"{values[c, g]:.0f}{few}", ha="center", va="center", fontsize=6)
        _group_axes(ax, names, n_classes)
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle(f"{split} accuracy (%) per group\n(· fewer than 10 examples)", fontsize=9)
    return save_png(fig, path)


def _cmap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="#d0d0d0")


def _group_axes(ax: Any, names: Sequence[str], n_classes: int) -> None:
    """Class rows and group columns, labelled by the groups' common prefix (``attr 3`` -> column ``3`` under
    "bias attribute"; ``reference wrong`` -> ``wrong`` under "reference")."""
    prefixes = {"attr": "bias attribute", "reference": "reference", "pseudo": "pseudo-group (0: majority)"}
    first = names[0].split(" ")[0] if names else ""
    common = first in prefixes and all(n.startswith(first + " ") for n in names)
    labels = [n.removeprefix(first + " ") for n in names] if common else list(names)
    ax.set_xticks(range(len(names)), labels, fontsize=7)
    ax.set_xlabel(prefixes[first] if common else "group", fontsize=8)
    ax.set_yticks(range(n_classes), [str(c) for c in range(n_classes)], fontsize=7)
    ax.set_ylabel("class", fontsize=8)
