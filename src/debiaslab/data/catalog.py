"""The table of registered datasets: ``@register_dataset("colored_mnist")`` on a builder fills it.

Dataset modules import this module to register themselves; :mod:`debiaslab.data.registry` imports the dataset
modules and builds from the table, so the imports point one way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from debiaslab.data.core import DatasetBundle
from debiaslab.utils.registry import Registry

Builder = Callable[..., DatasetBundle]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its builder ``(data_root, cache_dir, **options) -> DatasetBundle`` and a summary."""

    name: str
    builder: Builder
    description: str

    def options(self) -> dict[str, Any]:
        """Builder keyword options and their defaults (everything after data_root and cache_dir)."""
        params = list(inspect.signature(self.builder).parameters.values())[2:]
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default) for p in params}


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, description: str = "") -> Callable[[Builder], Builder]:
    def decorator(fn: Builder) -> Builder:
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        DATASETS.register(name)(DatasetSpec(name, fn, doc))
        return fn

    return decorator
