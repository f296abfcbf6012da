"""How a benchmark run's trunk and data loaders run on its device: autocast and memory format of the
trunk (:func:`trunk_runner`), and the number of loader workers (:func:`num_workers`)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from .data import FeatureDataset, TensorImageDataset
from .loader import auto_num_workers
from .precision import AutocastTrunk, autocast_dtype

__all__ = ["num_workers", "trunk_runner", "uses_channels_last"]


def trunk_runner(trunk: torch.nn.Module, cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    """``trunk`` as training and testing call it: under autocast for ``precision: bf16|fp16``
    and on channels-last input when :func:`uses_channels_last`
    (:class:`~pml_regularizers.bench.precision.AutocastTrunk`), else as is."""
    dtype = autocast_dtype(cfg.precision)
    channels_last = uses_channels_last(cfg, device)
    if dtype is None and not channels_last:
        return trunk
    return AutocastTrunk(trunk, device.type, dtype, channels_last)


def uses_channels_last(cfg: DictConfig, device: torch.device) -> bool:
    """``channels_last``, with ``auto`` meaning on CUDA (where convolutions gain from it)."""
    return device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)


def num_workers(cfg: DictConfig, dataset: torch.utils.data.Dataset, world: int) -> int:
    """``num_workers``, with ``auto`` meaning none for data held in memory as tensors (a worker
    would only copy them)."""
    if cfg.num_workers != "auto":
        return int(cfg.num_workers)
    return 0 if isinstance(dataset, (TensorImageDataset, FeatureDataset)) else auto_num_workers(world)
