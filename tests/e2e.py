"""What the end-to-end tests through PML's own machinery share: labelled Gaussian blobs, and PML's
logging presets writing through record-keeper, with a GlobalEmbeddingSpaceTester and its
end-of-epoch hook (:func:`pml_logging`; the ``pml_logging`` fixture of ``conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_metric_learning import testers
from pytorch_metric_learning.utils import logging_presets
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator


def blobs(num_classes: int, per_class: int, dim: int, seed: int) -> torch.utils.data.TensorDataset:
    """``per_class`` points around each of ``num_classes`` random centres in ``dim`` dimensions."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x = centers[labels] + torch.randn(len(labels), dim, generator=g)
    return torch.utils.data.TensorDataset(x, labels)


@dataclass
class PMLLogging:
    """PML's hooks over a record-keeper in a folder, a tester and its end-of-epoch hook."""

    folder: Path
    hooks: Any
    tester: testers.GlobalEmbeddingSpaceTester
    end_of_epoch_hook: Any


def pml_logging(
    folder: Path, val: torch.utils.data.Dataset, patience: int | None = 1, **hook_options: Any
) -> PMLLogging:
    """Record-keeper logs in ``folder/logs`` (and TensorBoard's), PML's hook container over them
    (``hook_options``, such as ``log_freq``), a tester of MAP@R and P@1, and the end-of-epoch hook
    that tests ``val`` after every epoch with ``patience``."""
    record_keeper, _, _ = logging_presets.get_record_keeper(str(folder / "logs"), str(folder / "tensorboard"))
    assert record_keeper is not None, "logging presets need the tensorboard package"
    hooks = logging_presets.get_hook_container(record_keeper, **hook_options)
    tester = testers.GlobalEmbeddingSpaceTester(
        end_of_testing_hook=hooks.end_of_testing_hook,
        dataloader_num_workers=0,
        accuracy_calculator=AccuracyCalculator(
            include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count"
        ),
    )
    end_of_epoch_hook = hooks.end_of_epoch_hook(
        tester, {"val": val}, str(folder / "models"), test_interval=1, patience=patience
    )
    return PMLLogging(folder, hooks, tester, end_of_epoch_hook)
