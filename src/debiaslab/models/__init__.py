"""Backbones and heads. Every model is a :class:`Backbone`: ``features(x) -> (N, D)`` and a linear ``head``.

Importing this package fills the registry with the built-in models.
"""

from debiaslab.models import cnn, mlp, projected, resnet, text  # noqa: F401  (fill the registry)
from debiaslab.models.base import Backbone
from debiaslab.models.cnn import ConvNet
from debiaslab.models.mlp import MLP
from debiaslab.models.pretrained import load_pretrained
from debiaslab.models.registry import (
    MODELS,
    build_model,
    count_parameters,
    list_models,
    model_options,
    register_model,
)
from debiaslab.models.resnet import ResNet

__all__ = [
    "MLP",
    "MODELS",
    "Backbone",
    "ConvNet",
    "ResNet",
    "build_model",
    "count_parameters",
    "list_models",
    "load_pretrained",
    "model_options",
    "register_model",
]
