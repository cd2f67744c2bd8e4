"""Dataset registry: ``@register_dataset("colored_mnist")`` on a builder, ``build_dataset(name, **options)``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaslab.data.core import DatasetBundle
from debiaslab.errors import ConfigError
from debiaslab.utils.paths import resolve_cache_dir, resolve_data_root
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


def build_dataset(
    name: str,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetBundle:
    """Build a registered dataset; unknown options are a clear error listing the accepted ones."""
    _import_builtin_datasets()
    spec = DATASETS.get(name)
    accepted = spec.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(accepted) or '(none)'}"
        )
    root: Path = resolve_data_root(data_root)
    cache: Path = resolve_cache_dir(cache_dir)
    return spec.builder(root, cache, **options)


def list_datasets() -> list[DatasetSpec]:
    _import_builtin_datasets()
    return [DATASETS.get(n) for n in DATASETS.names()]


def _import_builtin_datasets() -> None:
    """Import the modules whose decorators fill the registry."""
    from debiaslab.data import (  # noqa: F401
        arrays,
        biased_mnist,
        celeba,
        civilcomments,
        class_folders,
        colored_mnist,
        corrupted_cifar10,
        dfa,
        folder,
        multinli,
        waterbirds,
    )
