"""Predictions of a finished run on new inputs: a folder of images, an ``.npz`` with an array ``x``, or a CSV of
texts. Inputs are prepared as evaluation prepared the run's test split (decoding size and mode, scaling,
normalisation, or the same frozen text encoder), from the ``input`` section of the run's ``config.yaml``; runs
written before that section existed rebuild their dataset once to read it.

The output CSV has one row per input: ``id`` (the image path relative to the folder, or the row number, or the
CSV's ``id`` column), ``prediction`` (class id), ``prediction_name`` (when the dataset names its classes) and
``prob_0`` .. ``prob_{K-1}`` (softmax of the logits).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from debiaslab.data.arrays import check_finite, load_npz
from debiaslab.data.images import IMAGE_EXTENSIONS, DecodeSpec, ImageFiles
from debiaslab.data.input_spec import ARRAY, IMAGE, TEXT, build_transform, describe_inputs
from debiaslab.errors import ConfigError, DataError
from debiaslab.run.directory import check_output_path
from debiaslab.run.train import load_finished_run, load_run_config
from debiaslab.utils.io import atomic_write_text

log = logging.getLogger(__name__)

BATCH = 256


def run_input_spec(
    run_dir: str | os.PathLike[str], data_root: str | None = None, cache_dir: str | None = None
) -> dict[str, Any]:
    """The run's recorded input description (``config.yaml``'s ``input``), else read from its rebuilt dataset."""
    config = load_run_config(run_dir)
    if config.get("input"):
        return config["input"]
    from debiaslab.data.registry import build_dataset

    run = config["run"]
    log.info("%s records no input description; rebuilding dataset %s to read it", run_dir, run["dataset"])
    bundle = build_dataset(run["dataset"], data_root, cache_dir, **run["dataset_options"])
    return describe_inputs(bundle.test, bundle.recipe)


def _fmt(shape: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


class Inputs:
    """New inputs as batches of model-ready tensors, with one id per example."""

    def __init__(self, ids: list[str], batches: Callable[[], Iterator[Tensor]]) -> None:
        self.ids, self.batches = ids, batches


def image_inputs(folder: Path, spec: dict[str, Any]) -> Inputs:
    """Every image under ``folder`` (any depth, sorted), decoded and transformed like the run's test split."""
    if spec["kind"] != IMAGE:
        raise ConfigError(
            f"{folder} is a folder of images, but the run's model takes {spec['kind']} inputs "
            f"of shape {_fmt(spec['shape'])}; give {_accepted(spec)}"
        )
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise DataError(f"{folder} holds no image files (expected {', '.join(IMAGE_EXTENSIONS)})")
    decode = spec["decode"]
    crop = decode.get("center_crop")
    files = ImageFiles(
        paths,
        DecodeSpec(size=tuple(decode["size"]), center_crop=tuple(crop) if crop else None, mode=decode["mode"]),
        workers=4,
        origin=lambda i: "input folder",
    )
    transform = _transform(spec)

    def batches() -> Iterator[Tensor]:
        for start in range(0, len(paths), BATCH):
            yield transform(files(torch.arange(start, min(start + BATCH, len(paths)))))

    return Inputs([p.relative_to(folder).as_posix() for p in paths], batches)


def array_inputs(path: Path, spec: dict[str, Any]) -> Inputs:
    """The array ``x`` of an ``.npz`` file, shaped and typed like the run's stored inputs (e.g. uint8 images)."""
    if spec["kind"] == TEXT:
        raise ConfigError(
            f"{path}: the run's model takes texts; give a CSV with column(s) {', '.join(spec['text']['text_fields'])}"
        )
    arrays = load_npz(path)
    if "x" not in arrays:
        raise DataError(f"{path} has no array 'x' (it holds {', '.join(arrays) or 'nothing'})")
    x = arrays["x"]
    stored, dtype = tuple(spec["stored_shape"]), spec["stored_dtype"]
    if x.ndim < 1 or tuple(x.shape[1:]) != stored:
        raise DataError(
            f"{path}: x has shape {_fmt(x.shape)}; the run's model expects (N, {_fmt(stored)[1:]} "
            f"({dtype}, as the dataset stores its inputs)"
        )
    if dtype == "uint8" and x.dtype != np.uint8:
        raise DataError(f"{path}: x has dtype {x.dtype}; the run's model expects uint8 pixels (0..255)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected numbers")
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    if dtype != "uint8":
        tensor = tensor.to(getattr(torch, dtype))
    if tensor.is_floating_point():
        check_finite(tensor, f"{path} x")
    transform = _transform(spec)

    def batches() -> Iterator[Tensor]:
        for start in range(0, len(tensor), BATCH):
            yield transform(tensor[start : start + BATCH])

    return Inputs([str(i) for i in range(len(tensor))], batches)


def text_inputs(path: Path, spec: dict[str, Any]) -> Inputs:
    """The texts of a CSV (column ``text``, or the dataset's text fields), through the run's encoder."""
    from debiaslab.data.files import read_csv_columns

    if spec["kind"] != TEXT:
        raise ConfigError(
            f"{path} is a CSV of texts, but the run's model takes {spec['kind']} inputs of shape "
            f"{_fmt(spec['shape'])}; give {_accepted(spec)}"
        )
    text = spec["text"]
    fields = list(text["text_fields"])
    columns = ["text"] if len(fields) == 1 else fields
    rows = read_csv_columns(path, columns, ("id",))
    texts = [rows[c] for c in columns]
    n = len(texts[0])
    if n == 0:
        raise DataError(f"{path} has a header but no rows")
    features = _encode(texts, text)
    ids = rows["id"] if rows.has("id") else [str(i) for i in range(n)]

    def batches() -> Iterator[Tensor]:
        for start in range(0, n, BATCH):
            yield features[start : start + BATCH]

    return Inputs(list(ids), batches)


def _encode(texts: list[list[str]], text: dict[str, Any]) -> Tensor:
    """Model inputs for the texts: frozen-encoder features (pairs as ``[u, v, |u-v|, u*v]``) or token ids."""
    if text["encoder"] == "tokens":
        from debiaslab.data.text_tokens import load_tokenizer, tokenize_split

        tokenizer = load_tokenizer(Path(str(text["tokenizer"])))
        ids = tokenize_split(tokenizer, tuple(texts), int(text["max_length"]), "tokenising")
        return torch.from_numpy(ids).long()
    from debiaslab.data.text_embed import EmbeddingLookup
    from debiaslab.data.text_encoders import get_encoder

    encoder = get_encoder(text["encoder"])
    table = torch.from_numpy(encoder.encode([t for field in texts for t in field]))
    n = len(texts[0])
    index = torch.stack([torch.arange(n) + k * n for k in range(len(texts))], dim=1)
    return EmbeddingLookup(table)(index)


def _transform(spec: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    if spec.get("transform") is None:
        raise ConfigError(
            "the run's evaluation transform cannot be rebuilt outside its dataset; predict on the dataset "
            "with `debiaslab evaluate` instead"
        )
    return build_transform(spec["transform"])


def _accepted(spec: dict[str, Any]) -> str:
    kind = spec["kind"]
    if kind == IMAGE:
        return "a folder of images or an .npz with uint8 x of shape (N, " + _fmt(spec["stored_shape"])[1:]
    if kind == ARRAY:
        return f"an .npz with x of shape (N, {_fmt(spec['stored_shape'])[1:]}"
    return "a CSV with column(s) " + ", ".join(spec["text"]["text_fields"])


def load_inputs(path: str | os.PathLike[str], spec: dict[str, Any]) -> Inputs:
    """Dispatch on what ``path`` is: a folder (images), ``.npz`` (arrays) or ``.csv`` (texts)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input {path} does not exist; expected a folder of images, an .npz or a .csv file")
    if path.is_dir():
        return image_inputs(path, spec)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return array_inputs(path, spec)
    if suffix == ".csv":
        return text_inputs(path, spec)
    raise DataError(f"input {path}: expected a folder of images, an .npz or a .csv file, not {suffix or 'a file'}")


@torch.no_grad()
def predict_run(
    run_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    data_root: str | None = None,
    cache_dir: str | None = None,
) -> tuple[Path, int]:
    """Write the predictions of the run's deployed model for ``inputs`` to ``out`` (default
    ``<run_dir>/predictions.csv``); returns the path and the number of rows."""
    from debiaslab.engine.trainer import resolve_device

    target = Path(out) if out is not None else Path(run_dir) / "predictions.csv"
    check_output_path(run_dir, target)
    model, model_spec = load_finished_run(run_dir)
    spec = run_input_spec(run_dir, data_root, cache_dir)
    if list(spec["shape"]) != list(model_spec["input_shape"]):
        raise DataError(
            f"{run_dir}: config.yaml describes inputs of shape {_fmt(spec['shape'])} but model.pt takes "
            f"{_fmt(model_spec['input_shape'])}"
        )
    data = load_inputs(inputs, spec)
    dev = resolve_device(device)
    model.to(dev).eval()
    probs = []
    for x in data.batches():
        probs.append(torch.softmax(model(x.to(dev)).float(), dim=1).cpu())
    p = torch.cat(probs)
    k = p.shape[1]
    names = spec.get("class_names")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "prediction", *(["prediction_name"] if names else []), *(f"prob_{j}" for j in range(k))])
    pred = p.argmax(dim=1).tolist()
    for i, row in enumerate(p.tolist()):
        extra = [names[pred[i]]] if names else []
        writer.writerow([data.ids[i], pred[i], *extra, *(f"{v:.6g}" for v in row)])
    atomic_write_text(target, buf.getvalue())
    return target, len(data.ids)
