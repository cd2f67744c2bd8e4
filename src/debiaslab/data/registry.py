"""Datasets by name: ``build_dataset(name, **options)`` and ``list_datasets()`` over every registered dataset.

Builders register themselves in :mod:`debiaslab.data.catalog` (``@register_dataset``); this module imports the
built-in dataset modules so that their decorators have run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from debiaslab.data.catalog import DATASETS, DatasetSpec, register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.errors import ConfigError
from debiaslab.utils.paths import resolve_cache_dir, resolve_data_root
from debiaslab.utils.registry import did_you_mean
from debiaslab.utils.typed import convert_arguments

__all__ = ["DATASETS", "DatasetSpec", "build_dataset", "check_options", "list_datasets", "register_dataset"]


def build_dataset(
    name: str,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetBundle:
    """Build a registered dataset; unknown options and values of the wrong type are a clear error."""
    options = check_options(name, options)
    root: Path = resolve_data_root(data_root)
    cache: Path = resolve_cache_dir(cache_dir)
    return DATASETS.get(name).builder(root, cache, **options)


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of dataset ``name`` checked by name and converted to the builder's declared types
    (``--data-opt ratio=1e-2`` -> 0.01); an unknown option or a value that does not fit is a ConfigError."""
    _import_builtin_datasets()
    spec = DATASETS.get(name)
    accepted = spec.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(accepted) or '(none)'}.{did_you_mean(unknown[0], accepted)}"
        )
    return convert_arguments(spec.builder, options, f"dataset {name!r}: option")


def dataset_name(name: str) -> str:
    """The registered spelling of a dataset name (``Colored_MNIST`` -> ``colored_mnist``)."""
    _import_builtin_datasets()
    return DATASETS.canonical(name)


def list_datasets() -> list[DatasetSpec]:
    _import_builtin_datasets()
    return DATASETS.values()


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
