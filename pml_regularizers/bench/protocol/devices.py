"""The device a benchmark run trains on: the config's ``device`` checked to be usable here
(:func:`resolve_device`), and how ``results.json`` names it (:func:`device_label`)."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .torchrun import Dist

__all__ = ["device_label", "resolve_device"]


def device_label(device: torch.device) -> str:
    """What ran an experiment, as ``results.json`` records it: ``"cpu"``, or ``"cuda: <GPU name>"``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def resolve_device(spec: str, ddp: Dist) -> torch.device:
    """The device ``spec`` names, checked to be usable here; under torchrun, this process's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {spec!r}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={spec}: MPS is not available here; use device=cpu or device=auto")
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        build = "has no CUDA support" if torch.version.cuda is None else "finds no GPU"
        raise ConfigError(
            f"device={spec}: CUDA is not available here (torch {torch.__version__} {build}); "
            "use device=cpu or device=auto"
        )
    if ddp.world > 1:
        device = torch.device("cuda", ddp.local_rank)
    if (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return device
