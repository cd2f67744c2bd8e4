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
import yaml

from debiaslab.errors import ConfigError


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


class RunFile(pydantic.BaseModel):
    """A run file: the ``run`` block and the device; the keys below it are what a run records about itself."""

    model_config = pydantic.ConfigDict(extra="forbid")

    run: RunBlock
    device: str = "auto"
    # recorded by a run, not read back: the run recomputes them
    dataset_recipe: Any = None
    protocol: Any = None
    selection_split: Any = None
    resolved_hparams: Any = None
    hparam_sources: Any = None
    debiaslab_version: Any = None
    torch_version: Any = None
    world_size: Any = None
    global_batch_size: Any = None
    input: Any = None
    labels: Any = None
    groups: Any = None


def read_run_file(path: str | Path) -> RunFile:
    """Parse and check a run file; a missing file, bad YAML, an unknown key or a value of the wrong type is a
    one-line :class:`ConfigError` naming the file and the key."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read run file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"run file {path} is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"run file {path}: expected a mapping with a 'run' block (as a run's config.yaml)")
    try:
        return RunFile.model_validate(doc)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            block = RunBlock if len(err["loc"]) > 1 and err["loc"][0] == "run" else RunFile
            expected = ", ".join(block.model_fields)
            raise ConfigError(f"run file {path}: unknown key {key!r}; expected some of: {expected}") from None
        if err["type"] == "missing":
            raise ConfigError(f"run file {path}: key {key!r} is missing") from None
        raise ConfigError(
            f"run file {path}: {key}={err.get('input')!r}: {err['msg'][0].lower()}{err['msg'][1:]}"
        ) from None
