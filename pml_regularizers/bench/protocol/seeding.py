"""The seeding of a benchmark run: every random draw of an epoch follows from (seed, fold, epoch,
rank), so a resumed run draws what an uninterrupted one would have."""

from __future__ import annotations

import random

import numpy as np
import torch
from pytorch_metric_learning.utils import common_functions as c_f

__all__ = ["reseed"]


def reseed(seed: int, fold: int, epoch: int, rank: int = 0) -> None:
    """Seed every RNG the trainer, sampler and augmentation use from (seed, fold, epoch, rank)."""
    s = (seed * 1_000_003 + fold * 10_007 + epoch + rank * 7_919) % (2**31)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)
    c_f.NUMPY_RANDOM.seed(s)  # PML's samplers draw from this module-level generator
