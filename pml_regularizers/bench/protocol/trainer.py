"""The runner's adapter over PML's trainers: one subclass layer that owns what a benchmark run adds
to a PML trainer, in place of patching instances.

:func:`bench_trainer_class` gives, for any PML trainer class (``MetricLossOnly``,
``TrainWithClassifier``, :class:`~pml_regularizers.DVMLTrainer`, ...), a subclass with
:class:`BenchTrainerMixin` first in its method resolution order. The mixin

- serves every epoch from one DataLoader the runner gives it (``loader=``: persistent workers,
  pinned memory), where PML builds a new one at each ``train()`` call;
- scales the loss for float16 training (``grad_scaler=``): the backward pass runs on the scaled
  total loss, each optimizer steps through the scaler, which skips a step whose gradients
  overflowed, and the scale is updated once an iteration;
- steps epochs (:meth:`BenchTrainerMixin.fit`): before each epoch a callback reseeds, after it a
  callback validates, saves the checkpoints and says whether to stop; the epoch is PML's own loop
  (forward and backward, the end-of-iteration hook, the learning-rate schedulers, the end-of-epoch
  hook) without its progress bar, and gives the epoch's mean training loss;
- shuts its loader's workers down (:meth:`BenchTrainerMixin.close`) in the process that started
  them, so that no forked worker of a later loader inherits them and fails to stop them at exit.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["BenchTrainerMixin", "bench_trainer_class"]


class BenchTrainerMixin:
    """What the runner adds to a PML trainer (the module's description); first in the MRO of the
    classes :func:`bench_trainer_class` makes.

    Parameters
    ----------
    *args, **kwargs
        The PML trainer's arguments.
    loader : torch.utils.data.DataLoader, optional
        Serves every epoch (its sampler draws each epoch's order anew); by default PML's own
        DataLoader, built at each epoch.
    grad_scaler : torch.amp.GradScaler, optional
        Scales the loss (float16 training).
    """

    # What PML's BaseTrainer provides (the mixin only runs as its subclass).
    models: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    losses: dict[str, Any]
    freeze_these: Any
    iterations_per_epoch: int | None
    dataloader: Any
    dataloader_iter: Any
    epoch: int
    iteration: int
    end_of_iteration_hook: Callable[[Any], Any]
    end_of_epoch_hook: Callable[[Any], Any]

    def __init__(
        self,
        *args: Any,
        loader: torch.utils.data.DataLoader | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        **kwargs: Any,
    ) -> None:
        self._loader = loader
        self._grad_scaler = grad_scaler
        super().__init__(*args, **kwargs)

    def initialize_dataloader(self) -> None:
        """PML's DataLoader, or the one given as ``loader`` (a new iterator over it)."""
        if self._loader is None:
            super().initialize_dataloader()  # type: ignore[misc]
            return
        self.dataloader = self._loader
        if not self.iterations_per_epoch:
            self.iterations_per_epoch = len(self._loader)
        self.dataloader_iter = iter(self._loader)

    def backward(self) -> None:
        """PML's backward pass, on the scaled total loss with a gradient scaler."""
        if self._grad_scaler is None:
            super().backward()  # type: ignore[misc]
            return
        self._grad_scaler.scale(self.losses["total_loss"]).backward()

    def step_optimizers(self) -> None:
        """PML's optimizer steps, through the gradient scaler when there is one (frozen models
        skipped as PML skips them; an optimizer whose parameters got no gradient is not stepped,
        as ``GradScaler.step`` refuses it)."""
        if self._grad_scaler is None:
            super().step_optimizers()  # type: ignore[misc]
            return
        for name, optimizer in self.optimizers.items():
            frozen = name.removesuffix("_optimizer") in self.freeze_these
            if not frozen and _has_gradients(optimizer):
                self._grad_scaler.step(optimizer)
        self._grad_scaler.update()

    def train_epoch(self, epoch: int) -> float:
        """Train epoch ``epoch``: what PML's ``train(epoch, epoch)`` does, without its progress
        bar; the mean total loss over its iterations."""
        self.initialize_dataloader()
        self.epoch = epoch
        self.set_to_train()  # type: ignore[attr-defined]
        total, iterations = None, self.iterations_per_epoch or 0
        for self.iteration in range(iterations):
            self.forward_and_backward()  # type: ignore[attr-defined]
            self.end_of_iteration_hook(self)
            loss = torch.as_tensor(self.losses["total_loss"]).detach()
            total = loss if total is None else total + loss
            self.step_lr_schedulers(end_of_epoch=False)  # type: ignore[attr-defined]
        self.step_lr_schedulers(end_of_epoch=True)  # type: ignore[attr-defined]
        self.zero_losses()  # type: ignore[attr-defined]
        self.end_of_epoch_hook(self)
        return float(total) / iterations if total is not None else float("nan")

    def fit(
        self,
        first_epoch: int,
        last_epoch: int,
        before_epoch: Callable[[int], None],
        after_epoch: Callable[[int, float], bool],
    ) -> None:
        """Train epochs ``first_epoch`` to ``last_epoch``: ``before_epoch(epoch)`` first (reseeding),
        then :meth:`train_epoch`, then ``after_epoch(epoch, mean_loss)`` (validation, checkpoints),
        which returns True to stop."""
        for epoch in range(first_epoch, last_epoch + 1):
            before_epoch(epoch)
            if after_epoch(epoch, self.train_epoch(epoch)):
                return

    def close(self) -> None:
        """Let the loader's workers go, in this process: drop every reference to the loader and
        its iterator and collect them, which stops the workers."""
        self._loader = None
        self.dataloader = self.dataloader_iter = None
        gc.collect()


def _has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


@functools.cache
def bench_trainer_class(trainer_class: type) -> type:
    """``trainer_class`` (a PML trainer) with :class:`BenchTrainerMixin` first in its MRO, named
    ``Bench<Name>``; one class per trainer class."""
    return type(f"Bench{trainer_class.__name__}", (BenchTrainerMixin, trainer_class), {"__module__": __name__})
