"""LfF's fully connected network (also DeNetDM's Colored MNIST branches): flatten, ``depth`` x Linear+ReLU."""

from __future__ import annotations

from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone, flat_dim
from debiaslab.models.registry import register_model


class MLP(Backbone):
    """Flatten -> ``depth`` hidden Linear+ReLU layers of ``width`` -> head.

    Inputs are used as given (LfF feeds [0, 1] pixels without normalisation). ``depth=0`` is a linear model
    on the flattened input (feature_dim = prod(input_shape)).
    """

    def __init__(self, in_dim: int, n_classes: int, width: int = 100, depth: int = 3) -> None:
        super().__init__()
        if depth < 0 or width < 1:
            raise ConfigError(f"mlp needs depth >= 0 and width >= 1; got depth={depth}, width={width}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(depth):
            layers += [nn.Linear(dim, width), nn.ReLU(inplace=True)]
            dim = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = dim
        self.head = nn.Linear(dim, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1))


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], n_classes: int, *, width: int = 100, depth: int = 3) -> MLP:
    """LfF's MLP: 3 hidden layers of 100 by default (2352-100-100-100-K on Colored MNIST).

    DeNetDM on Colored MNIST: ``depth=4`` for the deep (biased) branch, ``depth=2`` for the shallow one.
    """
    return MLP(flat_dim(input_shape), n_classes, width=int(width), depth=int(depth))
