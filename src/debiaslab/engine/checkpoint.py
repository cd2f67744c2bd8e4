"""Atomic, checksummed checkpoints that load with ``weights_only=True``: a checkpoint from someone else cannot run
code, and one whose bytes changed after it was written, or that another run wrote, is refused, never used.

Every file records the SHA-256 of its contents and the hash of the run configuration that wrote it
(:mod:`debiaslab.engine.integrity`); loading recomputes the one and, when the caller knows its run, compares the
other. Files written before checksums were recorded load with a warning that they could not be verified.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from debiaslab.engine.integrity import config_hash, sealed, unseal
from debiaslab.errors import DataError
from debiaslab.utils.io import atomic_write, first_line, read_yaml_mapping

log = logging.getLogger(__name__)

#: the run configuration written beside a deployed model (the same name as ``debiaslab.run.directory.CONFIG``)
CONFIG_FILE = "config.yaml"


def save_checkpoint(
    path: str | os.PathLike[str], state: dict[str, Any], config: str | None = None, document: str | None = None
) -> Path:
    """Write ``state`` with its checksum and the hash ``config`` of the run that wrote it (None: not known) to
    ``path`` via a temp file + rename (an interrupted save leaves the old file intact); ``document``: the hash of
    the whole configuration file written beside it (deployed models)."""
    record = sealed(state, config, document)
    return atomic_write(path, lambda fh: torch.save(record, fh))


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    config: str | None = None,
    redo: str = "train it again with --overwrite",
    document: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint safely and verify it: a missing, unreadable, garbled or foreign file (one whose recorded
    run is not ``config``, when given) is a one-line :class:`DataError` naming it; ``redo`` says what to do. With
    ``document``, the configuration file beside it must be the one recorded (not changed since)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"checkpoint {path} is empty (0 bytes): it was not written completely; {redo}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise DataError(
            f"checkpoint {path} could not be loaded safely ({first_line(exc)}); it is damaged or not a debiaslab "
            f"checkpoint written by torch.save; {redo}"
        ) from exc
    contents, record, problem = unseal(state)
    if problem is not None:
        raise DataError(f"checkpoint {path} is corrupt: {problem}; it was not used; {redo}")
    if record is None:
        log.warning("%s was written without a checksum (by an older debiaslab); it could not be verified", path)
    elif config is not None and record.get("config") not in (None, config):
        raise DataError(
            f"checkpoint {path} was written by another run (configuration {record.get('config')}, this run's is "
            f"{config}); it was not used; {redo}"
        )
    elif document is not None and record.get("document") not in (None, document):
        raise DataError(
            f"{path.parent / CONFIG_FILE} changed after the run wrote it with {path.name} (it is damaged or was "
            f"edited); {path.name} was not used; restore {CONFIG_FILE} or {redo}"
        )
    return contents


def save_model_file(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    spec: dict[str, Any],
    config: str | None = None,
    document: str | None = None,
) -> Path:
    """Write a deployed model as ``{"spec", "state_dict"}``: the registry name and arguments that rebuild it, with
    its checksum, the hash ``config`` of the ``run`` section of the ``config.yaml`` written beside it and the hash
    ``document`` of that whole file."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"spec": spec, "state_dict": state}, config, document)


def run_config_hash(run_dir: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """The hashes of the ``run`` section and of the whole of ``run_dir``'s ``config.yaml``; ``(None, None)`` when
    there is no such file or it is not a run's configuration (the commands that read the configuration say what
    is wrong with it)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None, None
    try:
        doc = read_yaml_mapping(path, "the configuration of a debiaslab run")
    except DataError:
        return None, None
    return (config_hash(doc["run"]) if isinstance(doc.get("run"), dict) else None), config_hash(doc)


def load_model_file(path: str | os.PathLike[str], check_config: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`save_model_file` (``weights_only`` load, checksum verified); returns it and
    its spec. With ``check_config``, a model whose recorded run is not the one the ``config.yaml`` beside it
    describes is refused (one run's model beside another's config). Its ``pretrained`` start is not fetched
    again: the saved state dict replaces every weight."""
    from debiaslab.models import build_model
    from debiaslab.models.pretrained import without_pretrained

    path = Path(path)
    config, document = run_config_hash(path.parent) if check_config else (None, None)
    redo = "train the run again (--overwrite)"
    state = load_checkpoint(path, config=config, redo=redo, document=document)
    spec = state.get("spec")
    if not isinstance(spec, dict) or "state_dict" not in state:
        raise DataError(f"{path} is not a debiaslab model file (expected keys 'spec' and 'state_dict')")
    try:
        kwargs = without_pretrained(spec["kwargs"])
        model = build_model(spec["name"], tuple(spec["input_shape"]), spec["n_classes"], **kwargs)
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: its model spec is incomplete ({first_line(exc)}); {redo}") from exc
    load_weights(model, state["state_dict"], path)
    return model, spec


def load_weights(module: torch.nn.Module, state: Any, path: str | os.PathLike[str]) -> None:
    """``module.load_state_dict(state)``; weights that do not fit (missing, unexpected or of another shape) are one
    :class:`DataError` naming the file they came from."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DataError(
            f"{path} holds weights that do not fit the model ({detail}); expected a file of the same model and settings"
        ) from exc


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (for keeping the best epoch in memory)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
