"""Which examples an epoch visits, and in which order: one mechanism for ERM, reweighting, JTT, BAM, REST, DRO.

A sampler turns ``(epoch, generator)`` into a 1-D tensor of dataset indices; the loop slices it into batches.
Every epoch's generator is derived from the run seed and the epoch number, so a resumed run replays the
same order without saving sampler state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor

from debiaslab.errors import ConfigError


class Sampler(Protocol):
    """Produces the indices of one epoch."""

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor: ...

    def __len__(self) -> int:
        """Number of indices per epoch."""
        ...


class UniformSampler:
    """Every example once per epoch, shuffled (or in order)."""

    def __init__(self, n: int, shuffle: bool = True) -> None:
        self.n, self.shuffle = int(n), shuffle

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.n, generator=generator)
        return torch.arange(self.n)

    def __len__(self) -> int:
        return self.n


class WeightedSampler:
    """Draw ``num_samples`` indices with probability proportional to ``weights`` (with replacement)."""

    def __init__(self, weights: Tensor, num_samples: int | None = None, replacement: bool = True) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.numel() == 0 or bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
            raise ConfigError("sampling weights must be finite and non-negative, with at least one entry")
        if float(weights.sum()) <= 0:
            raise ConfigError("sampling weights sum to zero: no example could ever be drawn")
        self.weights = weights
        self.num_samples = int(num_samples if num_samples is not None else weights.numel())
        self.replacement = replacement

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.multinomial(self.weights, self.num_samples, self.replacement, generator=generator)

    def __len__(self) -> int:
        return self.num_samples


class IndexListSampler:
    """A fixed list of indices (repetitions allowed), shuffled each epoch: JTT/BAM upsampling, subsampling."""

    def __init__(self, indices: Tensor, shuffle: bool = True) -> None:
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if self.indices.numel() == 0:
            raise ConfigError("index-list sampler got an empty list of indices")
        self.shuffle = shuffle

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        if not self.shuffle:
            return self.indices.clone()
        return self.indices[torch.randperm(self.indices.numel(), generator=generator)]

    def __len__(self) -> int:
        return self.indices.numel()


def inverse_frequency_weights(labels: Tensor, n_values: int, power: float = 1.0) -> Tensor:
    """Per-example weight ``1 / n_{label}^power`` (power 1: 1/n, 0.5: 1/sqrt(n)), normalised to mean 1."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if bool((labels < 0).any()):
        raise ConfigError("inverse-frequency weights need a known label/group for every example (found -1)")
    counts = torch.bincount(labels, minlength=n_values).to(torch.float64)
    w = counts.clamp(min=1).pow(-power)[labels]
    return w / w.mean()


def group_balanced_sampler(groups: Tensor, n_groups: int, num_samples: int | None = None) -> WeightedSampler:
    """Each group equally likely per draw (probability ∝ 1/n_g per example)."""
    return WeightedSampler(inverse_frequency_weights(groups, n_groups), num_samples=num_samples)


def upsample_indices(n: int, upweighted: Tensor, times: int) -> Tensor:
    """Indices ``0..n-1`` where every index in ``upweighted`` appears ``times`` times in total, the rest once.

    JTT counts error examples ``λ_up + 1`` times (pass ``times=λ_up + 1``); BAM lists them ``μ`` times.
    """
    if times < 1:
        raise ConfigError(f"upsampling factor {times} must be >= 1")
    counts = torch.ones(n, dtype=torch.long)
    up = torch.as_tensor(upweighted, dtype=torch.long).reshape(-1)
    counts[up] = times
    return torch.repeat_interleave(torch.arange(n), counts)


def subsample_groups(groups: Tensor, n_groups: int, generator: torch.Generator) -> Tensor:
    """Keep ``min_g n_g`` random examples of every non-empty group (sorted indices)."""
    groups = torch.as_tensor(groups, dtype=torch.long)
    counts = torch.bincount(groups[groups >= 0], minlength=n_groups)
    present = counts > 0
    if not bool(present.any()):
        raise ConfigError("cannot subsample groups: no example has a known group")
    keep = int(counts[present].min())
    chosen = []
    for g in torch.nonzero(present).flatten().tolist():
        members = torch.nonzero(groups == g).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:keep]])
    return torch.sort(torch.cat(chosen)).values


def iterate_batches(indices: Tensor, batch_size: int, drop_last: bool = False) -> Iterator[Tensor]:
    """Consecutive slices of ``indices`` (views, no copies)."""
    n = indices.numel()
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield indices[start : start + batch_size]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
