"""The backbone contract: ``features(x) -> (N, D)`` plus a linear ``head`` (D -> K) methods may reach or swap.

DeNetDM adds the features of two branches before one head, DeTT transplants a teacher's head, DFR refits the
head on frozen features: all of them need the split between feature extractor and classifier to be explicit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError


class Backbone(nn.Module):
    """A classifier ``head(features(x))``: subclasses set ``feature_dim``, ``head`` and write ``features``."""

    feature_dim: int
    head: nn.Linear

    def features(self, x: Tensor) -> Tensor:
        """The penultimate representation, shape (N, feature_dim)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @property
    def n_classes(self) -> int:
        return self.head.out_features

    def reset_head(self, n_classes: int | None = None) -> nn.Linear:
        """Replace the head by a fresh ``Linear(feature_dim, n_classes)`` on the same device and dtype.

        ``n_classes`` defaults to the current number of classes. Returns the new head.
        """
        old = self.head
        k = old.out_features if n_classes is None else int(n_classes)
        self.head = nn.Linear(self.feature_dim, k, device=old.weight.device, dtype=old.weight.dtype)
        return self.head


def has_feature_map(model: nn.Module) -> bool:
    """Whether ``model`` exposes ``feature_map(x)``: its features as a (B, C, H, W) map before global pooling
    (the convolutional backbones), so that ``features(x)`` is that map averaged over H and W."""
    return callable(getattr(model, "feature_map", None))


def check_n_classes(n_classes: int) -> int:
    if int(n_classes) < 1:
        raise ConfigError(f"n_classes must be at least 1; got {n_classes}")
    return int(n_classes)


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Validate a (C, H, W) input shape for a convolutional model."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"model {model!r} needs image inputs of shape (C, H, W); got input_shape={tuple(input_shape)}"
        )
    return shape  # type: ignore[return-value]


def flat_dim(input_shape: Sequence[int]) -> int:
    """Number of input features once flattened."""
    dim = math.prod(int(d) for d in input_shape)
    if dim < 1:
        raise ConfigError(f"input_shape must be non-empty with positive sizes; got {tuple(input_shape)}")
    return dim


def init_conv_bn(module: nn.Module) -> None:
    """Standard init: Kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def global_avg_pool(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C); works for any memory format."""
    return torch.flatten(x.mean(dim=(2, 3)), 1)
