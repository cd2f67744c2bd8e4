"""``debiaslab train --config FILE``: a run described in YAML, in the schema of the ``config.yaml`` a run writes.

So a run is repeated from its own record (``debiaslab train --config runs/x/config.yaml --out runs/y``). Only the
``run`` block (method, dataset, dataset_options, hparams, seed, precision) and ``device`` decide the run; the
other keys a run records (resolved hyperparameters, versions, ...) are accepted and ignored. Any other key is a
one-line error naming it and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from debiaslab.errors import ConfigError
from debiaslab.utils.io import load_yaml_file


class RunBlock(pydantic.BaseModel):
    """What defines a run (``RunConfig.identity``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    method: str
    dataset: str
    dataset_options: dict[str, Any] = pydantic.Field(default_factory=dict)
    hparams: dict[str, Any] = pydantic.Field(default_factory=dict)
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    groups: str | None = None
    groups_recipe: dict[str, Any] | None = None


#: what a run records about itself besides the ``run`` block and the device: accepted, not read back (the run
#: recomputes them)
RECORDED_KEYS: tuple[str, ...] = (
    "dataset_recipe",
    "protocol",
    "selection_split",
    "resolved_hparams",
    "hparam_sources",
    "debiaslab_version",
    "torch_version",
    "world_size",
    "global_batch_size",
    "input",
    "labels",
    "groups",
)


class RunFile(pydantic.BaseModel):
    """A run file: the ``run`` block and the device (the :data:`RECORDED_KEYS` are dropped before it is read)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    run: RunBlock
    device: str = "auto"


def read_run_file(path: str | Path) -> RunFile:
    """Parse and check a run file; a missing file, bad YAML, an unknown key or a value of the wrong type is a
    one-line :class:`ConfigError` naming the file and the key."""
    path = Path(path)
    doc = load_yaml_file(path, "run file")
    if not isinstance(doc, dict):
        raise ConfigError(f"run file {path}: expected a mapping with a 'run' block (as a run's config.yaml)")
    try:
        return RunFile.model_validate({k: v for k, v in doc.items() if k not in RECORDED_KEYS})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            in_run = len(err["loc"]) > 1 and err["loc"][0] == "run"
            expected = ", ".join(RunBlock.model_fields if in_run else [*RunFile.model_fields, *RECORDED_KEYS])
            raise ConfigError(f"run file {path}: unknown key {key!r}; expected some of: {expected}") from None
        if err["type"] == "missing":
            raise ConfigError(f"run file {path}: key {key!r} is missing") from None
        raise ConfigError(
            f"run file {path}: {key}={err.get('input')!r}: {err['msg'][0].lower()}{err['msg'][1:]}"
        ) from None
