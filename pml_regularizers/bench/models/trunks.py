"""Trunks for the benchmark runner.

Every trunk maps a batch to flat features and carries an ``output_size`` attribute (the length
of those features), which the runner uses to size the embedder. The small trunks for the offline
data sets are defined here; the torchvision and timm trunks are in
:mod:`pml_regularizers.bench.models.library_trunks` and importable from here as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..._arguments import is_int

__all__ = ["Conv4", "MLP", "SmallResNet"]


def _check_positive_int(name: str, value: int) -> None:
    if not is_int(value, 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class Conv4(nn.Module):
    """The standard four-block Omniglot backbone.

    Each block is ``Conv3x3(hidden, padding=1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)``; the
    output of the last block is flattened.

    Parameters
    ----------
    in_channels : int
        Channels of the input images (1 for Omniglot).
    image_size : int
        Height and width of the (square) input images; sets ``output_size``. At least 16, since
        the four poolings halve the side four times.
    hidden : int
        Channels of every convolution.

    Attributes
    ----------
    output_size : int
        ``hidden * (image_size // 16) ** 2``, the length of the features for ``image_size`` inputs.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 32, hidden: int = 64) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("image_size", image_size), ("hidden", hidden)]:
            _check_positive_int(name, value)
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 (four 2x poolings), got {image_size}")
        widths = [in_channels, hidden, hidden, hidden, hidden]
        self.features = nn.Sequential(*[self._block(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:])])
        self.output_size = hidden * (image_size // 16) ** 2

    @staticmethod
    def _block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return the flattened features of a batch ``x`` of shape ``(N, C, H, W)``."""
        return torch.flatten(self.features(x), start_dim=1)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for small images.

    A 3x3 stem convolution, then one stage of basic residual blocks per entry of ``widths`` (the
    first stage keeps the resolution, every later one halves it), then global average pooling.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    widths : sequence of int
        Channels of each stage; the stem has ``widths[0]`` channels.
    blocks_per_stage : int
        Basic blocks in every stage.

    Attributes
    ----------
    output_size : int
        ``widths[-1]``; independent of the input size thanks to the global pooling.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("blocks_per_stage", blocks_per_stage)
        widths = list(widths)
        if not widths:
            raise ValueError("widths must name at least one stage width, got an empty sequence")
        for w in widths:
            _check_positive_int("every entry of widths", w)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(c_in, width, stride))
                c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.output_size = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Return the pooled features, shape ``(N, output_size)``, of images ``(N, C, H, W)``."""
        return self.features(x)


class MLP(nn.Module):
    """A multilayer perceptron for precomputed features.

    The input is flattened, then each entry of ``hidden`` adds ``Linear -> ReLU``. With an empty
    ``hidden`` the trunk only flattens.

    Parameters
    ----------
    in_features : int
        Length of the flattened input.
    hidden : sequence of int
        Widths of the hidden layers.

    Attributes
    ----------
    output_size : int
        ``hidden[-1]``, or ``in_features`` when ``hidden`` is empty.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (512,)) -> None:
        super().__init__()
        _check_positive_int("in_features", in_features)
        sizes = [in_features, *hidden]
        for width in sizes[1:]:
            _check_positive_int("every entry of hidden", width)
        layers: list[nn.Module] = [nn.Flatten()]
        for c_in, c_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(c_in, c_out), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.output_size = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Return the features of ``x`` (any shape whose trailing dimensions hold ``in_features``)."""
        return self.layers(x)
