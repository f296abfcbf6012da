"""Mixed precision and memory format for the trunk of a benchmark run.

``precision: bf16`` or ``fp16`` runs the trunk's forward pass under :func:`torch.autocast` and hands
its features to the embedder and the loss in float32, so the plugin's modules and PML's losses
compute as in a float32 run; only the trunk, where nearly all the work is, runs in half precision.
``fp16`` also scales the loss with a :class:`torch.amp.GradScaler`, as float16 gradients need
(:class:`~pml_regularizers.bench.protocol.trainer.BenchTrainerMixin`).
``channels_last`` stores the trunk's weights and its input images in the NHWC memory format, which
GPU convolutions run faster in.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..spec.run_spec import RuntimeSpec

__all__ = ["PRECISIONS", "AutocastTrunk", "autocast_dtype", "trunk_runner", "uses_channels_last"]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for ``"fp32"``).

    Raises
    ------
    ValueError
        For a name other than ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


class AutocastTrunk(nn.Module):
    """A trunk run under autocast (and on channels-last input), returning float32 features.

    It holds the trunk as its only submodule, so ``train()``, ``eval()`` and ``apply()`` (PML's
    batch-norm freezing among them) reach it; checkpoints are taken from the trunk itself.

    Parameters
    ----------
    trunk : torch.nn.Module
        The trunk (or a ``DistributedDataParallel`` around it).
    device_type : str
        ``"cuda"`` or ``"cpu"``: the device type autocast acts on.
    dtype : torch.dtype or None
        The autocast dtype; None runs the trunk in its own dtype.
    channels_last : bool
        Convert 4-D input to the channels-last memory format first (the trunk's weights must have
        been converted with ``trunk.to(memory_format=torch.channels_last)``).
    """

    def __init__(self, trunk: nn.Module, device_type: str, dtype: torch.dtype | None, channels_last: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.device_type = device_type
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        """The trunk's features of ``x``, in float32."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            features = self.trunk(x)
        return features.float()


def trunk_runner(trunk: torch.nn.Module, runtime: RuntimeSpec, device: torch.device) -> torch.nn.Module:
    """``trunk`` as training and testing call it: under autocast for ``precision: bf16|fp16``
    and on channels-last input when :func:`uses_channels_last`
    (:class:`~pml_regularizers.bench.models.precision.AutocastTrunk`), else as is."""
    dtype = autocast_dtype(runtime.precision)
    channels_last = uses_channels_last(runtime, device)
    if dtype is None and not channels_last:
        return trunk
    return AutocastTrunk(trunk, device.type, dtype, channels_last)


def uses_channels_last(runtime: RuntimeSpec, device: torch.device) -> bool:
    """The run's ``channels_last``, with ``auto`` meaning on CUDA (where convolutions gain from
    it)."""
    return device.type == "cuda" if runtime.channels_last == "auto" else bool(runtime.channels_last)
