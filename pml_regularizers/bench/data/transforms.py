"""The natural-image transforms the field uses, from ``torchvision.transforms.v2``.

Training: ``RandomResizedCrop(crop)`` and ``RandomHorizontalFlip()``; evaluation:
``Resize(resize)`` (the shorter side) and ``CenterCrop(crop)``; both then scale the pixels to
``float32`` in ``[0, 1]`` and normalise them with the ImageNet mean and standard deviation (the
statistics ImageNet-pretrained trunks expect). Geometry runs on ``uint8`` image tensors, which
torchvision resizes fastest.

torchvision is imported only when :func:`natural_transforms` is called, so the package imports
without it; it comes with the ``vision`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from ..._arguments import finite_floats, is_positive_int
from ..extras import VISION_INSTALL, missing_module_hint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VISION_MISSING_MESSAGE = f"the natural-image pipeline needs torchvision; {VISION_INSTALL}"


def natural_transforms(
    train: bool,
    crop: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the training or evaluation transform of RGB PIL images.

    Parameters
    ----------
    train : bool
        True for the random training crops and flips, False for the deterministic evaluation
        resize and center crop.
    crop : int, default 224
        Side of the square output, in pixels.
    resize : int, default 256
        Evaluation only: the shorter side of the image before the center crop; at least ``crop``.
    mean, std : sequence of 3 floats, default ImageNet's
        Per-channel (R, G, B) normalisation constants, in units of ``[0, 1]`` pixels; ``std``
        must be positive.

    Returns
    -------
    callable
        Maps an RGB PIL image to a ``float32`` tensor of shape ``(3, crop, crop)``. Its random
        choices come from torch's global generator.

    Raises
    ------
    ValueError
        When an argument is out of range (the message names it).
    ImportError
        When torchvision cannot be imported.
    """
    if not isinstance(train, bool):
        raise ValueError(f"train must be a bool, got {train!r}")
    for name, value in (("crop", crop), ("resize", resize)):
        if not is_positive_int(value):
            raise ValueError(f"{name} must be a positive int number of pixels, got {value!r}")
    if not train and crop > resize:
        raise ValueError(
            f"crop ({crop}) must be <= resize ({resize}): evaluation crops the center of the "
            "image resized to a shorter side of resize"
        )
    mean = _three_channels("mean", mean)
    std = _three_channels("std", std)
    if min(std) <= 0:
        raise ValueError(f"std must be > 0 for every channel, got {list(std)}")
    v2 = _import_v2()
    if train:
        geometry: list[Any] = [
            v2.RandomResizedCrop(crop, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize(resize, antialias=True), v2.CenterCrop(crop)]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor(),
        ]
    )


def _three_channels(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    first, second, third = finite_floats(name, values, 3, "R, G, B")
    return first, second, third


def _import_v2() -> Any:
    with missing_module_hint(VISION_MISSING_MESSAGE):
        from torchvision.transforms import v2
    return v2
