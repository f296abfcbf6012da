"""Full precision inside the package's modules when the caller runs under autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def autocast_off(x: Tensor) -> Iterator[None]:
    """Turn autocast off for ``x``'s device type while the block runs, if it is on.

    Autocast runs matrix products and linear layers in float16 or bfloat16. The package's modules
    compute their pair sums, log-determinants and divergences in the dtype of their input (float32
    at least) or of their parameters, so they leave autocast for their own work and return to it
    afterwards. Device types that autocast does not know pass through unchanged.
    """
    device_type = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):  # a device type autocast does not cover
        enabled = False
    if not enabled:
        yield
        return
    with torch.autocast(device_type, enabled=False):
        yield
