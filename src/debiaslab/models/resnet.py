"""ResNets (He et al., 2016): 18 and 50 with an ImageNet or CIFAR stem, 20 for CIFAR.

Submodules follow the usual ImageNet layout (``conv1, bn1, layer1..layer4``; blocks with ``conv1, bn1, conv2,
bn2, (conv3, bn3), downsample.0/1``) so torchvision's ImageNet state dicts load after renaming ``fc.`` to
``head.`` (see :func:`~debiaslab.models.pretrained.load_pretrained`, which also fetches them). Bottlenecks stride
in the 3x3 convolution ("v1.5").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone, global_avg_pool, image_shape, init_conv_bn
from debiaslab.models.pretrained import load_pretrained
from debiaslab.models.registry import register_model

Stem = Literal["imagenet", "cifar"]
Shortcut = Literal["A", "B"]


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free shortcut (the ResNet paper's "option A"): subsample spatially, zero-pad new channels."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """Stem, residual stages ``layer1..layerN`` (first at stride 1, the rest at stride 2), GAP, linear head.

    ``stem="imagenet"``: 7x7 stride-2 conv + 3x3 stride-2 max pool; ``stem="cifar"``: one 3x3 conv, no pool.
    ``shortcut="B"`` projects with 1x1 conv + BN where shapes change; ``"A"`` pads with zeros (no parameters).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        n_classes: int,
        *,
        in_channels: int = 3,
        stem: Stem = "imagenet",
        shortcut: Shortcut = "B",
        zero_init_residual: bool = False,
        arch: str = "ResNet",
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ConfigError(f"{arch}: stem must be 'imagenet' or 'cifar'; got {stem!r}")
        if shortcut not in ("A", "B"):
            raise ConfigError(f"{arch}: shortcut must be 'A' or 'B'; got {shortcut!r}")
        self.arch = arch
        self.stem = stem
        c = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_channels, c)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.stages: list[str] = []
        for i, (n_blocks, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            c_out = planes * block.expansion
            blocks = []
            for j in range(n_blocks):
                down: nn.Module | None = None
                s = stride if j == 0 else 1
                if s != 1 or c != c_out:
                    if shortcut == "A" and c_out >= c:
                        down = PadShortcut(c, c_out, s)
                    else:
                        down = nn.Sequential(conv1x1(c, c_out, s), nn.BatchNorm2d(c_out))
                blocks.append(block(c, planes, s, down))
                c = c_out
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stages.append(name)
        self.feature_dim = c
        self.head = nn.Linear(c, n_classes)
        init_conv_bn(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.feature_map(x))

    def feature_map(self, x: Tensor) -> Tensor:
        """The last stage's output before global average pooling, (B, feature_dim, H, W)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return x


def _resnet(
    name: str,
    block: type[BasicBlock | Bottleneck],
    layers: Sequence[int],
    widths: Sequence[int],
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    stem: Stem,
    zero_init_residual: bool,
    shortcut: Shortcut = "B",
    pretrained: str | Path | None = None,
    arch: str,
) -> ResNet:
    c, _, _ = image_shape(input_shape, name)
    model = ResNet(
        block,
        layers,
        widths,
        n_classes,
        in_channels=c,
        stem=stem,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        arch=arch,
    )
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


PRETRAINED_DOC = (
    '``pretrained``: ``"imagenet"`` (torchvision\'s published weights, fetched with their checksum), a URL or a local '
    "state-dict file."
)


def _imagenet_resnet(
    name: str, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], arch: str, doc: str
) -> Callable[..., ResNet]:
    """The factory of an ImageNet-layout ResNet (widths 64-128-256-512), registered as ``name``."""

    def factory(
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        stem: Stem = "imagenet",
        zero_init_residual: bool = False,
        pretrained: str | None = None,
    ) -> ResNet:
        return _resnet(
            name, block, layers, (64, 128, 256, 512), input_shape, n_classes, stem=stem,
            zero_init_residual=zero_init_residual, pretrained=pretrained, arch=arch,
        )  # fmt: skip

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_model(name)(factory)


resnet18 = _imagenet_resnet(
    "resnet18",
    BasicBlock,
    (2, 2, 2, 2),
    "ResNet-18",
    "ResNet-18 (basic blocks 2-2-2-2, feature_dim 512); " + PRETRAINED_DOC,
)
resnet50 = _imagenet_resnet(
    "resnet50",
    Bottleneck,
    (3, 4, 6, 3),
    "ResNet-50",
    "ResNet-50 (bottlenecks 3-4-6-3, feature_dim 2048); " + PRETRAINED_DOC,
)


@register_model("resnet18_cifar")
def resnet18_cifar(input_shape: tuple[int, ...], n_classes: int, *, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 with the CIFAR stem (3x3 conv, no max pool): keeps resolution on 32x32 images."""
    return resnet18(input_shape, n_classes, stem="cifar", zero_init_residual=zero_init_residual)


@register_model("resnet20")
def resnet20(
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    shortcut: Shortcut = "A",
    zero_init_residual: bool = False,
) -> ResNet:
    """CIFAR ResNet-20: 3x3 stem, three stages of 3 basic blocks (16/32/64), feature_dim 64, 0.27 M params.

    ``shortcut="A"`` (zero-padding identity, the paper's CIFAR choice) or ``"B"`` (1x1 conv projections).
    """
    return _resnet(
        "resnet20",
        BasicBlock,
        (3, 3, 3),
        (16, 32, 64),
        input_shape,
        n_classes,
        stem="cifar",
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        arch="ResNet-20",
    )


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet18_cifar", "resnet20", "resnet50"]
