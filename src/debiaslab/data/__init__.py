"""Data layer: the (x, y, attr, group, index) contract, dataset registry and builders."""

from debiaslab.data.core import Batch, DatasetBundle, GroupDataset
from debiaslab.data.registry import build_dataset, list_datasets, register_dataset

__all__ = ["Batch", "DatasetBundle", "GroupDataset", "build_dataset", "list_datasets", "register_dataset"]
