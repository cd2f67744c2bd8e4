"""A backbone whose features pass through a trainable projector: ``head(P(φ(x)))``.

DeTT maps a (smaller) student's features into its teacher's feature space so the teacher's head can be
transplanted; DeNetDM needs a target branch whose width matches the frozen deep branch. Both are this model:
any registered backbone ``base`` (its own head is dropped) followed by a linear map or a small MLP to ``dim``
(``projected``), or a convolutional backbone whose feature map passes a conv bottleneck (``projected_map``).
"""

from __future__ import annotations

from typing import Any

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


class ConvProjectedBackbone(Backbone):
    """``base.feature_map`` -> convolutional bottleneck projector -> a ``dim``-channel map -> global average pool
    -> head (``Linear(dim, K)``).

    The projector is 1×1 conv -> BN -> ReLU -> 3×3 conv -> BN -> ReLU -> 1×1 conv (``hidden`` channels inside):
    DeTT's projector for convolutional students, which matches the teacher's feature *map* before pooling.
    """

    def __init__(self, base: Backbone, dim: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ConfigError(f"projected_map needs dim >= 1 and hidden >= 1; got dim={dim}, hidden={hidden}")
        if not has_feature_map(base):
            raise ConfigError(
                f"projected_map: base {type(base).__name__} has no feature map before pooling; use a convolutional "
                "backbone (cnn*, resnet*) or the vector projector 'projected'"
            )
        del base.head
        self.base = base
        c = base.feature_dim
        self.projector = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1),
        )
        self.feature_dim = int(dim)
        self.head = nn.Linear(self.feature_dim, n_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The projected map, (B, dim, H, W) at the base's spatial size."""
        return self.projector(self.base.feature_map(x))  # type: ignore[operator]

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
) -> ConvProjectedBackbone:
    """Convolutional backbone ``base`` whose feature map is projected to ``dim`` channels by a 1×1 -> 3×3 -> 1×1
    bottleneck (``hidden`` channels inside; default ``max(dim // 4, 1)``) before pooling and the head."""
    if base in ("projected", "projected_map"):
        raise ConfigError(f"projected_map: base cannot itself be {base!r}")
    inner = build_model(base, input_shape, n_classes, **dict(base_kwargs or {}))
    width = max(int(dim) // 4, 1) if hidden is None else int(hidden)
    return ConvProjectedBackbone(inner, int(dim), n_classes, width)
