"""What a model's inputs look like before and after the evaluation transform, written down so that new inputs
(a folder of images, an array file, a table of texts) can be prepared exactly as evaluation prepared its split.

:func:`describe_inputs` reads a split (its stored inputs, its loader's decoding, its evaluation transform) and
returns a plain, YAML-safe dict that a run records in ``config.yaml`` under ``input``; :func:`build_transform`
turns the recorded steps back into the same batch transform. Text splits record their encoder (frozen embeddings
or token ids) and their text fields instead of pixel steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from debiaslab.data.core import GroupDataset
from debiaslab.data.images import MODES, ImageFiles
from debiaslab.data.text_embed import EmbeddingLookup
from debiaslab.data.text_tokens import AsLong
from debiaslab.data.transforms import CenterCrop, Compose, Normalize, Resize, ToFloat
from debiaslab.errors import ConfigError

IMAGE, ARRAY, TEXT = "image", "array", "text"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _steps(transform: Any) -> list[dict[str, Any]] | None:
    """The transform as a list of plain steps, or None when a step is not one this module can rebuild."""
    if transform is None:
        return []
    if isinstance(transform, Compose):
        out: list[dict[str, Any]] = []
        for t in transform.transforms:
            inner = _steps(t)
            if inner is None:
                return None
            out.extend(inner)
        return out
    if isinstance(transform, ToFloat):
        return [{"step": "to_float", "scale": transform.scale, "dtype": _dtype_name(transform.dtype)}]
    if isinstance(transform, Normalize):
        return [{"step": "normalize", "mean": list(transform.mean), "std": list(transform.std)}]
    if isinstance(transform, Resize):
        size = transform.size if isinstance(transform.size, int) else list(transform.size)
        return [{"step": "resize", "size": size, "mode": transform.mode, "antialias": transform.antialias}]
    if isinstance(transform, CenterCrop):
        return [{"step": "center_crop", "size": list(transform.size)}]
    if isinstance(transform, AsLong):
        return [{"step": "as_long"}]
    return None


def build_transform(steps: list[dict[str, Any]]) -> Callable[[Tensor], Tensor]:
    """The batch transform that :func:`describe_inputs` recorded as ``steps``."""
    out: list[Callable[[Tensor], Tensor]] = []
    for s in steps:
        kind = s.get("step")
        if kind == "to_float":
            out.append(ToFloat(float(s["scale"]), getattr(torch, str(s.get("dtype", "float32")))))
        elif kind == "normalize":
            out.append(Normalize(s["mean"], s["std"]))
        elif kind == "resize":
            size = s["size"] if isinstance(s["size"], int) else tuple(s["size"])
            out.append(Resize(size, mode=s.get("mode", "bilinear"), antialias=bool(s.get("antialias", True))))
        elif kind == "center_crop":
            out.append(CenterCrop(tuple(s["size"])))
        elif kind == "as_long":
            out.append(AsLong())
        else:
            raise ConfigError(f"unknown input transform step {kind!r} in the run's config.yaml")
    return Compose(out)


def describe_inputs(dataset: GroupDataset, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """How ``dataset`` (an evaluation split) turns stored inputs into model inputs, as a YAML-safe dict.

    Keys: ``kind`` (``image``, ``array`` or ``text``), ``shape`` (one model input), ``stored_shape`` and
    ``stored_dtype`` (one example before the transform), ``transform`` (steps, or None when the split's transform
    cannot be written down), ``decode`` (images: ``size``, ``center_crop``, ``mode``) and ``text`` (text: the
    ``encoder``, ``text_fields`` and, for token ids, ``tokenizer`` and ``max_length``)."""
    recipe = recipe or {}
    probe = torch.zeros(1, dtype=torch.long)
    stored = dataset.x[:1] if dataset.x is not None else dataset.loader(probe)  # type: ignore[misc]
    spec: dict[str, Any] = {
        "shape": list(dataset.input_shape),
        "stored_shape": list(stored.shape[1:]),
        "stored_dtype": _dtype_name(stored.dtype),
        "n_classes": dataset.n_classes,
        "class_names": recipe.get("class_names"),
    }
    transform = dataset.transform
    if isinstance(transform, EmbeddingLookup) or (isinstance(transform, AsLong) and "text_options" in recipe):
        options = recipe.get("text_options") or {}
        text: dict[str, Any] = {
            "encoder": options.get("encoder", "minilm"),
            "text_fields": list(recipe.get("text_fields") or ["text"]),
        }
        if text["encoder"] == "tokens":
            text.update(tokenizer=options.get("tokenizer"), max_length=options.get("max_length"))
        return {
            **spec,
            "kind": TEXT,
            "transform": _steps(transform) if isinstance(transform, AsLong) else None,
            "text": text,
        }
    steps = _steps(transform)
    if isinstance(dataset.loader, ImageFiles):
        s = dataset.loader.spec
        decode = {
            "size": list(spec["stored_shape"][1:]),
            "center_crop": list(s.center_crop) if s.center_crop else None,
            "mode": s.mode,
        }
        return {**spec, "kind": IMAGE, "transform": steps, "decode": decode}
    if stored.dtype == torch.uint8 and stored.dim() == 4 and stored.shape[1] in MODES.values():
        mode = next(m for m, c in MODES.items() if c == stored.shape[1])
        crop = recipe.get("center_crop")
        decode = {"size": list(stored.shape[2:]), "center_crop": list(crop) if crop else None, "mode": mode}
        return {**spec, "kind": IMAGE, "transform": steps, "decode": decode}
    return {**spec, "kind": ARRAY, "transform": steps}
