"""A backbone whose features pass through a trainable projector: ``head(P(φ(x)))``.

DeTT maps a (smaller) student's features into its teacher's feature space so the teacher's head can be
transplanted; DeNetDM needs a target branch whose width matches the frozen deep branch. Both are this model:
any registered backbone ``base`` (its own head is dropped) followed by a linear map or a small MLP to ``dim``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone
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
