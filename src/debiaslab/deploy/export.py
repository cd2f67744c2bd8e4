"""Export a finished run's deployed model to ONNX or TorchScript, and check the export by running it.

The model maps a batch of prepared inputs (shape ``(N, *input_shape)``, as evaluation feeds it: after scaling
and normalisation) to logits ``(N, K)``. The batch dimension is dynamic. After writing the file, the export is
loaded back (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and run on fresh random inputs of another
batch size than the one used to export; the largest absolute difference from the PyTorch model's logits must be
within :data:`ATOL` (plus :data:`RTOL` of the logit's size), else the export is removed and an error says by how
much it differed. ONNX export uses ``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``; both ONNX
packages come with the optional extra ``export``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError, DebiasLabError, DiskFullError, output_error
from debiaslab.run.directory import check_output_path
from debiaslab.run.train import load_finished_run, load_run_config
from debiaslab.utils.io import disk_full_error

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
ATOL = 1e-4
RTOL = 1e-4
OPSET = 18
EXPORT_EXTRA_HINT = "install the extra: pip install 'debiaslab[export]'"


class ExportError(DebiasLabError):
    """The exported model could not be written, or does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    atol: float
    rtol: float
    batch: int


def _require(module: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs the Python package {module!r}, not installed; {EXPORT_EXTRA_HINT}"
        ) from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation warnings and notes about optional operator sets."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.jit", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def example_inputs(input_shape: tuple[int, ...], batch: int, seed: int) -> Tensor:
    """Random inputs of the model's shape (standard normal: the range of normalised images and embeddings)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_shape), generator=g)


def _export_onnx(model: nn.Module, example: Tensor, path: Path) -> Callable[[Tensor], np.ndarray]:
    _require("onnx")
    _require("onnxscript")
    ort = _require("onnxruntime")
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,  # one self-contained file (weights inside; fine below protobuf's 2 GB)
            verbose=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    runner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    name = runner.get_inputs()[0].name
    return lambda x: runner.run(None, {name: x.numpy()})[0]


def _export_torchscript(model: nn.Module, example: Tensor, path: Path) -> Callable[[Tensor], np.ndarray]:
    with _quiet():
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()  # serialised in memory: torch.jit.save to a full disk aborts the interpreter
        torch.jit.save(traced, buffer)
        path.write_bytes(buffer.getvalue())
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return run


@torch.no_grad()
def export_run(
    run_dir: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    check_batch: int = 7,
) -> ExportResult:
    """Export the run's deployed model to ``out`` (default ``<run_dir>/model.onnx`` or ``model.torchscript.pt``)
    and check it against the PyTorch model on ``check_batch`` random inputs."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    default = "model.onnx" if fmt == "onnx" else "model.torchscript.pt"
    target = Path(out) if out is not None else Path(run_dir) / default
    check_output_path(run_dir, target)
    model, spec = load_finished_run(run_dir)
    config = load_run_config(run_dir)
    inputs = config.get("input") or {}
    if (inputs.get("text") or {}).get("encoder") == "tokens":
        raise ConfigError(
            f"{run_dir}: the model takes token ids of a local transformers model; export it with that "
            "library's own exporters"
        )
    model = model.float().eval()
    input_shape = tuple(int(s) for s in spec["input_shape"])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=SUFFIX[fmt], dir=target.parent)
    except OSError as exc:
        raise disk_full_error(target, exc) or output_error(target, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        exporter = _export_onnx if fmt == "onnx" else _export_torchscript
        try:
            run = exporter(model, example_inputs(input_shape, 2, seed=0), tmp)
        except (ConfigError, ExportError, DiskFullError):
            raise
        except Exception as exc:  # the exporters raise many types for unsupported operations
            full = disk_full_error(target, exc)
            if full is not None:
                raise full from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{fmt} export of {spec['name']} failed: {type(exc).__name__}: {first}") from exc
        x = example_inputs(input_shape, check_batch, seed=1)
        ref = model(x).float().numpy()
        got = run(x)
        if got.shape != ref.shape:
            raise ExportError(f"the {fmt} export returns shape {got.shape}; the PyTorch model {ref.shape}")
        diff = float(np.abs(got - ref).max())
        allowed = atol + rtol * np.abs(ref)
        if not np.all(np.abs(got - ref) <= allowed):
            raise ExportError(
                f"the {fmt} export differs from the PyTorch model by up to {diff:.3g} on the same inputs; "
                f"expected at most {atol:g} + {rtol:g} x |logit|"
            )
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except OSError as exc:
            raise output_error(target, exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("%s export of %s: max abs difference %.3g on %d inputs", fmt, run_dir, diff, check_batch)
    return ExportResult(target, fmt, diff, atol, rtol, check_batch)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
