"""Small plain CNNs: REST's Colored MNIST model and the shallow branches of DeNetDM (3 and 4 conv layers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone, global_avg_pool, image_shape, init_conv_bn
from debiaslab.models.registry import register_model

Downsample = Literal["maxpool", "stride", "none"]


class ConvBlock(nn.Module):
    """Conv -> BatchNorm -> ReLU, optionally followed by 2x2 max pooling."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.pool: nn.Module = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class ConvNet(Backbone):
    """A stack of :class:`ConvBlock` s, global average pooling, linear head. ``feature_dim = channels[-1]``.

    Every block but the last downsamples by 2: with a 2x2 max pool (``"maxpool"``), a stride-2 convolution
    (``"stride"``), or not at all (``"none"``; use ``stride`` for conv strides then). ``kernel_size`` is one size
    for every block or one per block.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        n_classes: int,
        channels: Sequence[int],
        *,
        kernel_size: int | Sequence[int] = 3,
        stride: int = 1,
        padding: int | None = None,
        downsample: Downsample = "maxpool",
        name: str = "cnn",
    ) -> None:
        super().__init__()
        if downsample not in ("maxpool", "stride", "none"):
            raise ConfigError(f"{name}: downsample must be 'maxpool', 'stride' or 'none'; got {downsample!r}")
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ConfigError(f"{name}: channels must be a non-empty list of positive widths; got {channels}")
        kernels = _per_block(kernel_size, len(channels), name)
        c_in, h, w = input_shape
        blocks = []
        for i, (c_out, kernel_size) in enumerate(zip(channels, kernels, strict=True)):
            pad = kernel_size // 2 if padding is None else int(padding)
            last = i == len(channels) - 1
            s = 2 if downsample == "stride" and not last else stride
            pool = downsample == "maxpool" and not last
            blocks.append(ConvBlock(c_in, c_out, kernel_size, s, pad, pool))
            h, w = ((d + 2 * pad - kernel_size) // s + 1 for d in (h, w))
            if pool:
                h, w = h // 2, w // 2
            if min(h, w) < 1:
                raise ConfigError(
                    f"{name}: input {input_shape[1]}x{input_shape[2]} is too small for {len(channels)} conv "
                    f"layers of kernel {kernel_size} (feature map vanishes after layer {i + 1})"
                )
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = channels[-1]
        self.head = nn.Linear(self.feature_dim, n_classes)
        init_conv_bn(self)

    def features(self, x: Tensor) -> Tensor:
        return global_avg_pool(self.blocks(x))

    def feature_map(self, x: Tensor) -> Tensor:
        """The last block's output before global average pooling, (B, feature_dim, H, W)."""
        return self.blocks(x)


def _per_block(kernel_size: int | Sequence[int], n: int, name: str) -> list[int]:
    """One kernel size per block: an int repeated, or a list of exactly ``n`` positive sizes."""
    sizes = [kernel_size] * n if isinstance(kernel_size, int) else list(kernel_size)
    if len(sizes) != n or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes):
        raise ConfigError(
            f"{name}: kernel_size must be a positive int or a list of {n} (one per block); got {kernel_size}"
        )
    return sizes


@register_model("cnn_rest")
def cnn_rest(input_shape: tuple[int, ...], n_classes: int, *, channels: Sequence[int] = (64, 128, 256)) -> ConvNet:
    """REST's Colored MNIST model: three 4x4 stride-2 convolutions (64/128/256), BN+ReLU, GAP, fc."""
    return ConvNet(
        image_shape(input_shape, "cnn_rest"),
        n_classes,
        channels,
        kernel_size=4,
        stride=2,
        padding=1,
        downsample="none",
        name="cnn_rest",
    )


def _blocks(name: str, default_channels: tuple[int, ...], doc: str) -> Callable[..., ConvNet]:
    """The factory of a plain stack of ``len(default_channels)`` conv blocks, registered as ``name``."""
    depth = len(default_channels)

    def factory(
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        channels: Sequence[int] = default_channels,
        kernel_size: int | Sequence[int] = 3,
        padding: int | None = None,
        downsample: Downsample = "maxpool",
    ) -> ConvNet:
        if len(channels) != depth:
            raise ConfigError(f"{name} needs exactly {depth} channel widths; got {list(channels)}")
        shape = image_shape(input_shape, name)
        return ConvNet(
            shape, n_classes, channels, kernel_size=kernel_size, padding=padding, downsample=downsample, name=name
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register_model(name)(factory)


cnn3 = _blocks(
    "cnn3",
    (32, 64, 128),
    """Three conv blocks (DeNetDM's shallow branch on Corrupted CIFAR-10).

    The release used ``channels=(32, 64, 64), kernel_size=5, padding=0`` (64 = ResNet-20's feature width).
    """,
)
cnn4 = _blocks(
    "cnn4",
    (32, 64, 128, 256),
    """Four conv blocks (DeNetDM's shallow branch on BFFHQ).

    The release used ``channels=(64, 128, 512, 512), kernel_size=(7, 3, 3, 3), padding=0`` (512 = ResNet-18's
    width; about 3 M conv weights).
    """,
)


@register_model("cnn_rebias")
def cnn_rebias(
    input_shape: tuple[int, ...], n_classes: int, *, channels: Sequence[int] = (16, 32, 64, 128), kernel_size: int = 7
) -> ConvNet:
    """ReBias's Biased MNIST model (SimpleConvNet): four 7x7 stride-1 convolutions (16/32/64/128), BN+ReLU, no
    downsampling, global average pooling, fc."""
    return ConvNet(
        image_shape(input_shape, "cnn_rebias"),
        n_classes,
        channels,
        kernel_size=kernel_size,
        stride=1,
        padding=kernel_size // 2,
        downsample="none",
        name="cnn_rebias",
    )
