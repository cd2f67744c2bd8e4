"""What a sample is: ``(x, y, attr, group, index)``, served by slicing in-memory tensors or by a lazy loader.

A :class:`GroupDataset` is one split. Labels (``y``, ``attr``) always live in memory as 1-D ``int64`` tensors;
inputs either live in memory as one tensor (small datasets: batches are slices of it, no per-item Python) or
are produced by a ``loader(indices) -> Tensor`` (large image datasets decoded on demand by a worker pool).
``attr`` is ``-1`` where the bias attribute is unknown, and so is ``group = y * n_attrs + attr``.
``index`` is the position in the split, stable across epochs (per-example state such as BAM's auxiliary
logits or LfF's loss averages is indexed by it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from debiaslab.errors import DataError

InputLoader = Callable[[Tensor], Tensor]
BatchTransform = Callable[[Tensor], Tensor]


class Batch(NamedTuple):
    """A minibatch; every field has the batch dimension first."""

    x: Tensor
    y: Tensor
    attr: Tensor
    group: Tensor
    index: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self))


class GroupDataset:
    """One split of a dataset with class labels, bias attributes and groups.

    Args:
        y: class labels, shape ``(N,)``, values in ``[0, n_classes)``.
        attr: bias attribute per example, ``(N,)``, values in ``[0, n_attrs)`` or ``-1`` (unknown);
            ``None`` means unknown for every example.
        n_classes: number of classes K.
        n_attrs: number of attribute values (1 when there is no attribute).
        x: inputs held in memory, first dimension N (any dtype; ``transform`` turns a batch into model input).
        loader: alternative to ``x``: ``loader(indices) -> Tensor`` returns the inputs of those indices.
        transform: batch-level transform applied after slicing/loading (e.g. uint8 -> float in [0, 1]).
        aligned_groups: ids of the bias-aligned groups. Default: groups with ``attr == y`` when the attribute
            ranges over the classes (Colored MNIST, Waterbirds), otherwise none.
        name, split: for messages and reports.
    """

    def __init__(
        self,
        *,
        y: Tensor,
        n_classes: int,
        n_attrs: int = 1,
        attr: Tensor | None = None,
        x: Tensor | None = None,
        loader: InputLoader | None = None,
        transform: BatchTransform | None = None,
        aligned_groups: Iterable[int] | None = None,
        name: str = "dataset",
        split: str = "train",
    ) -> None:
        if (x is None) == (loader is None):
            raise ValueError("give exactly one of x (in-memory inputs) or loader (lazy inputs)")
        y = torch.as_tensor(y, dtype=torch.long).reshape(-1)
        n = y.numel()
        attr = torch.full((n,), -1, dtype=torch.long) if attr is None else torch.as_tensor(attr, dtype=torch.long)
        attr = attr.reshape(-1)
        self.name, self.split = name, split
        where = f"{name}/{split}"
        if attr.numel() != n:
            raise DataError(f"{where}: {attr.numel()} attributes for {n} labels; expected one per example")
        if x is not None and x.shape[0] != n:
            raise DataError(f"{where}: {x.shape[0]} inputs for {n} labels; expected one per example")
        if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            bad = int(y[(y < 0) | (y >= n_classes)][0])
            raise DataError(f"{where}: label {bad} outside the declared classes 0..{n_classes - 1}")
        if n and (int(attr.min()) < -1 or int(attr.max()) >= n_attrs):
            bad = int(attr[(attr < -1) | (attr >= n_attrs)][0])
            raise DataError(f"{where}: attribute {bad} outside 0..{n_attrs - 1} (or -1 for unknown)")
        self.y, self.attr = y, attr
        self.n_classes, self.n_attrs = int(n_classes), int(n_attrs)
        self.x, self.loader, self.transform = x, loader, transform
        self.group = torch.where(attr >= 0, y * self.n_attrs + attr, torch.full_like(y, -1))
        if aligned_groups is None:
            aligned_groups = (
                [c * self.n_attrs + c for c in range(self.n_classes)] if self.n_attrs == self.n_classes else []
            )
        self.aligned_groups: frozenset[int] = frozenset(int(g) for g in aligned_groups)
        #: where ``group`` comes from: ``"attributes"`` (the dataset's own), ``"none"``, or the groups file that
        #: replaced them (``with_groups``); runs record it per split so tables can say which labels a number used
        self.group_source: str = "attributes" if self.has_attrs else "none"

    # ------------------------------------------------------------------ sizes and labels
    def __len__(self) -> int:
        return self.y.numel()

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attrs

    @property
    def has_attrs(self) -> bool:
        """True when every example has a known attribute (so group metrics and group methods apply)."""
        return len(self) > 0 and bool((self.attr >= 0).all())

    @property
    def group_counts(self) -> Tensor:
        known = self.group[self.group >= 0]
        return torch.bincount(known, minlength=self.n_groups)

    @property
    def class_counts(self) -> Tensor:
        return torch.bincount(self.y, minlength=self.n_classes)

    @property
    def is_aligned(self) -> Tensor:
        """Bool per example: in a bias-aligned group (False where the attribute is unknown)."""
        aligned = torch.zeros(self.n_groups + 1, dtype=torch.bool)
        for g in self.aligned_groups:
            aligned[g] = True
        return aligned[self.group]  # group -1 indexes the trailing False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs(torch.zeros(1, dtype=torch.long)).shape[1:])

    # ------------------------------------------------------------------ access
    def inputs(self, index: Tensor) -> Tensor:
        """Model-ready inputs for a 1-D index tensor (slicing or the loader, then the transform)."""
        x = self.x[index] if self.x is not None else self.loader(index)  # type: ignore[misc]
        return self.transform(x) if self.transform is not None else x

    def batch(self, index: Tensor) -> Batch:
        index = index.to(torch.long)
        return Batch(self.inputs(index), self.y[index], self.attr[index], self.group[index], index)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, int, int]:
        b = self.batch(torch.tensor([i]))
        return b.x[0], int(b.y), int(b.attr), int(b.group), int(b.index)

    def subset(self, index: Tensor, split: str | None = None) -> GroupDataset:
        """A new split with the chosen examples; ``index`` in the new split counts from 0 again."""
        index = torch.as_tensor(index, dtype=torch.long)
        parent = self
        out = GroupDataset(
            y=self.y[index],
            attr=self.attr[index],
            n_classes=self.n_classes,
            n_attrs=self.n_attrs,
            x=self.x[index] if self.x is not None else None,
            loader=None if self.x is not None else (lambda i: parent.loader(index[i])),  # type: ignore[misc]
            transform=self.transform,
            aligned_groups=self.aligned_groups,
            name=self.name,
            split=split or self.split,
        )
        out.group_source = self.group_source if out.has_attrs else "none"
        return out

    def replaced(self, **changes: Any) -> GroupDataset:
        """A new dataset over the same examples, with ``changes`` (constructor arguments) in place of this one's
        values; new inputs ``x`` replace the ``loader`` and a new ``loader`` replaces ``x``."""
        values: dict[str, Any] = {
            "y": self.y,
            "attr": self.attr,
            "n_classes": self.n_classes,
            "n_attrs": self.n_attrs,
            "x": None if "loader" in changes else self.x,
            "loader": None if "x" in changes else self.loader,
            "transform": self.transform,
            "aligned_groups": self.aligned_groups,
            "name": self.name,
            "split": self.split,
        }
        return GroupDataset(**(values | changes))

    def with_groups(self, pseudo: Tensor, n_per_class: int, source: str) -> GroupDataset:
        """A view whose groups are ``(class, pseudo)`` pairs instead of the dataset's attributes.

        ``pseudo`` holds a within-class pseudo-group id in ``[0, n_per_class)`` per example (0: the class's majority,
        the pseudo-group that plays "bias-aligned"); methods and selection rules read these groups exactly as they
        read true ones. The inputs and labels are shared, not copied; ``source`` is recorded as ``group_source``.
        """
        pseudo = torch.as_tensor(pseudo, dtype=torch.long).reshape(-1)
        if pseudo.numel() != len(self):
            raise DataError(
                f"{self.name}/{self.split}: {pseudo.numel()} inferred groups for {len(self)} examples; "
                "expected one per example"
            )
        view = self.replaced(
            attr=pseudo, n_attrs=int(n_per_class), aligned_groups=[c * int(n_per_class) for c in range(self.n_classes)]
        )
        view.group_source = source
        return view

    def without_attributes(self) -> GroupDataset:
        """A view with every attribute unknown (``-1``): what group inference is given, so it cannot read them."""
        return self.replaced(attr=None, n_attrs=1, aligned_groups=[])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "n_classes": self.n_classes,
            "n_attrs": self.n_attrs,
            "has_attrs": self.has_attrs,
            "group_counts": self.group_counts.tolist(),
        }

    def __repr__(self) -> str:
        return f"GroupDataset({self.name}/{self.split}, n={len(self)}, K={self.n_classes}, A={self.n_attrs})"


@dataclass
class DatasetBundle:
    """The splits of one dataset plus how they were made.

    ``selection`` names the split used to select checkpoints and hyperparameters. It is ``"val"`` except under
    the documented ``protocol="paper"`` switch, where it is ``"test"`` (the papers' practice) and every report
    says so.
    """

    name: str
    train: GroupDataset
    val: GroupDataset
    test: GroupDataset
    protocol: str = "default"
    selection: str = "val"
    recipe: dict[str, Any] = field(default_factory=dict)
    default_model: str = "mlp"
    notes: list[str] = field(default_factory=list)

    @property
    def selection_split(self) -> GroupDataset:
        return self.test if self.selection == "test" else self.val

    def splits(self) -> dict[str, GroupDataset]:
        return {"train": self.train, "val": self.val, "test": self.test}
