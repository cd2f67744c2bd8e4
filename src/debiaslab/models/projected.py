"""A backbone whose features pass through a trainable projector: ``head(P(φ(x)))``.

DeTT maps a (smaller) student's features into its teacher's feature space so the teacher's head can be
transplanted; DeNetDM needs a target branch whose width matches the frozen deep branch. Both are this model:
any registered backbone ``base`` (its own head is dropped) followed by a linear map or a small MLP to ``dim``
(``projected``), or a convolutional backbone whose feature map passes a conv bottleneck (``projected_map``).

The bottleneck's two designs (``style``):

- ``simkd``: the projector of SimKD (Chen et al., CVPR 2022, "Knowledge Distillation with the Reused Teacher
  Classifier"), which the public DeTT re-implementation (molereddy/distillation-group-analysis, ``local_models.py``
  ``SimKD``, factor 2) uses for DeTT: 1×1 -> 3×3 -> 1×1 convolutions without biases, ``hidden`` = dim / 2, each
  followed by BN and ReLU; a base map larger than ``pool_to`` is adaptively average-pooled down to it first.
- ``ours``: hidden dim / 4, no BN/ReLU after the last convolution (which has a bias), no pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone, global_avg_pool, has_feature_map
from debiaslab.models.registry import build_model, register_model


class ProjectedBackbone(Backbone):
    """``base.features`` -> projector -> ``dim`` features -> head (``Linear(dim, K)``)."""

    def __init__(self, base: Backbone, dim: int, n_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        if dim < 1 or (hidden is not None and hidden < 1):
            raise ConfigError(f"projected needs dim >= 1 and hidden >= 1 (or none); got dim={dim}, hidden={hidden}")
        del base.head  # the base's own classifier is never used: keep it out of the parameters
        self.base = base
        if hidden is None:
            self.projector: nn.Module = nn.Linear(base.feature_dim, dim)
        else:
            self.projector = nn.Sequential(
                nn.Linear(base.feature_dim, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, dim),
            )
        self.feature_dim = int(dim)
        self.head = nn.Linear(self.feature_dim, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.projector(self.base.features(x))


@register_model("projected")
def projected(
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    base: str = "mlp",
    base_kwargs: dict[str, Any] | None = None,
    dim: int = 100,
    hidden: int | None = None,
) -> ProjectedBackbone:
    """Backbone ``base`` (with ``base_kwargs``) whose features are mapped to ``dim`` by a linear projector, or by
    Linear-BN-ReLU-Linear when ``hidden`` is given (DeTT's projector for feature vectors)."""
    if base == "projected":
        raise ConfigError("projected: base cannot itself be 'projected'")
    inner = build_model(base, input_shape, n_classes, **dict(base_kwargs or {}))
    return ProjectedBackbone(inner, int(dim), n_classes, None if hidden is None else int(hidden))


MAP_STYLES = ("simkd", "ours")


def _bottleneck(c_in: int, hidden: int, dim: int, style: str) -> nn.Sequential:
    """1×1 -> 3×3 -> 1×1 convolutions with BN/ReLU between them, and after the last one in the ``simkd`` style."""
    simkd = style == "simkd"
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, hidden, 1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, dim, 1, bias=not simkd),
    ]
    if simkd:
        layers += [nn.BatchNorm2d(dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ConvProjectedBackbone(Backbone):
    """``base.feature_map`` -> (pooled down to ``pool_to`` when larger) -> convolutional bottleneck projector -> a
    ``dim``-channel map -> global average pool -> head (``Linear(dim, K)``); ``style`` as in the module docstring."""

    def __init__(
        self,
        base: Backbone,
        dim: int,
        n_classes: int,
        hidden: int,
        style: str = "simkd",
        pool_to: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ConfigError(f"projected_map needs dim >= 1 and hidden >= 1; got dim={dim}, hidden={hidden}")
        if style not in MAP_STYLES:
            raise ConfigError(f"projected_map: style {style!r} unknown; expected one of {', '.join(MAP_STYLES)}")
        if pool_to is not None and (len(pool_to) != 2 or min(int(v) for v in pool_to) < 1):
            raise ConfigError(f"projected_map: pool_to {pool_to!r} must be two sizes >= 1 (height, width)")
        if not has_feature_map(base):
            raise ConfigError(
                f"projected_map: base {type(base).__name__} has no feature map before pooling; use a convolutional "
                "backbone (cnn*, resnet*) or the vector projector 'projected'"
            )
        del base.head
        self.base = base
        self.style = style
        self.pool_to = None if pool_to is None else (int(pool_to[0]), int(pool_to[1]))
        self.projector = _bottleneck(base.feature_dim, hidden, dim, style)
        self.feature_dim = int(dim)
        self.head = nn.Linear(self.feature_dim, n_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The projected map, (B, dim, H, W): the base's spatial size, or ``pool_to`` where that is smaller."""
        fmap = self.base.feature_map(x)  # type: ignore[operator]
        if self.pool_to is not None:
            size = (min(fmap.shape[-2], self.pool_to[0]), min(fmap.shape[-1], self.pool_to[1]))
            if size != tuple(fmap.shape[-2:]):
                fmap = F.adaptive_avg_pool2d(fmap, size)
        return self.projector(fmap)

    def features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.feature_map(x))


@register_model("projected_map")
def projected_map(
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    base: str = "cnn4",
    base_kwargs: dict[str, Any] | None = None,
    dim: int = 512,
    hidden: int | None = None,
    style: str = "simkd",
    pool_to: list[int] | None = None,
) -> ConvProjectedBackbone:
    """Convolutional backbone ``base`` whose feature map is projected to ``dim`` channels by a 1×1 -> 3×3 -> 1×1
    bottleneck before pooling and the head. ``hidden`` channels inside (default dim / 2 for ``style="simkd"``,
    dim / 4 for ``"ours"``); ``pool_to`` (height, width): pool a larger base map down to it first."""
    if base in ("projected", "projected_map"):
        raise ConfigError(f"projected_map: base cannot itself be {base!r}")
    inner = build_model(base, input_shape, n_classes, **dict(base_kwargs or {}))
    default_hidden = int(dim) // 2 if style == "simkd" else int(dim) // 4
    width = max(default_hidden, 1) if hidden is None else int(hidden)
    return ConvProjectedBackbone(inner, int(dim), n_classes, width, style, pool_to)
