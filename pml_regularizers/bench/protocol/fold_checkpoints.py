"""The checkpoints of one fold of a benchmark run: saving what the fold trains, loading it back to
resume or to test, and checking that every fold has finished before an ``evaluate``.

The files and their backups are :mod:`pml_regularizers.bench.results.checkpoints`'; a fold's are the
:attr:`~pml_regularizers.bench.results.folder.FoldFolder.latest` and
:attr:`~pml_regularizers.bench.results.folder.FoldFolder.best` of its folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..models.build import Parts
from ..results.checkpoints import CheckpointOwner, LoadedCheckpoint, apply_checkpoint, load_checkpoint, save_checkpoint
from ..results.folder import LATEST_CHECKPOINT, ExperimentFolder, FoldFolder
from ..spec.run_spec import RunSpec

__all__ = ["check_trained", "load_fold_checkpoint", "save_fold_checkpoint"]

LOGGER = logging.getLogger(__name__)


def save_fold_checkpoint(
    path: Path,
    parts: Parts,
    optimizers: dict[str, Any] | None,
    state: dict,
    keep_previous: bool,
    owner: CheckpointOwner,
) -> None:
    """Save the models, the metric loss, the optimizers (and gradient scaler) and the fold's
    progress ``state`` to ``path``, as ``owner``'s, keeping the file it held as a backup when
    ``keep_previous``."""
    payload = {
        "models": {k: m.state_dict() for k, m in parts.models.items()},
        "loss": parts.loss_funcs["metric_loss"].state_dict(),
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "state": dict(state),
    }
    save_checkpoint(payload, path, keep_previous, owner)


def load_fold_checkpoint(
    path: Path,
    fold: FoldFolder,
    owner: CheckpointOwner,
    parts: Parts,
    optimizers: dict[str, Any] | None,
    device: torch.device,
    best_epoch: int | None = None,
) -> dict | None:
    """Load the checkpoint ``path`` of ``fold`` (or its backup, with a warning) into the models,
    loss and optimizers; return its state, or None when there is none.

    The file must be ``owner``'s (:class:`~pml_regularizers.bench.results.checkpoints.CheckpointOwner`).
    ``best_epoch``, for the best-epoch checkpoint, is the epoch the latest checkpoint names as the
    best, which the file must hold.
    """

    def apply(payload: dict) -> None:
        if best_epoch is not None:
            _best_epoch_check(path, best_epoch)(payload)
        apply_checkpoint(payload, path, parts.models, parts.loss_funcs["metric_loss"], optimizers)

    loaded = _read_fold_checkpoint(path, fold, owner, apply, device)
    if loaded is None:
        return None
    if loaded.problem:
        LOGGER.warning(
            "%s; resuming from %s (epoch %d)", loaded.problem, loaded.path.name, loaded.payload["state"]["epoch"]
        )
    return loaded.payload["state"]


def check_trained(folder: ExperimentFolder, spec: RunSpec, num_folds: int) -> None:
    """Refuse to evaluate unless every fold of every seed of ``spec`` has finished training, with
    usable checkpoints of its own."""
    for seed in spec.protocol.seed_range:
        for fold_number in range(num_folds):
            fold = folder.fold(seed, fold_number)
            owner = CheckpointOwner.of(spec, seed, fold_number)
            latest = _read_fold_checkpoint(fold.latest, fold, owner, lambda payload: None)
            if latest is None:
                raise UserError(
                    f"{fold.path} has no saved model (no {LATEST_CHECKPOINT}); train it first with pml-bench run"
                )
            state = latest.payload["state"]
            if not state["done"]:
                lost = f"; {latest.problem}" if latest.problem else ""
                raise UserError(
                    f"{fold.path} has not finished training (epoch {state['epoch']} of {spec.protocol.epochs}){lost}; "
                    "finish it first with pml-bench run and the same overrides"
                )
            if spec.protocol.validated and fold.best.exists():
                _read_fold_checkpoint(fold.best, fold, owner, _best_epoch_check(fold.best, state["best_epoch"]))


def _read_fold_checkpoint(
    path: Path,
    fold: FoldFolder,
    owner: CheckpointOwner,
    apply: Callable[[dict], Any],
    device: torch.device | str = "cpu",
) -> LoadedCheckpoint | None:
    """:func:`~pml_regularizers.bench.results.checkpoints.load_checkpoint` of ``owner``'s checkpoint, with
    what to do when neither the file nor its backup can be used added to the message."""
    try:
        return load_checkpoint(path, apply, device, owner)
    except UserError as err:
        raise UserError(f"{err}; delete {fold.path} to train fold {fold.fold} of seed {fold.seed} again") from err


def _best_epoch_check(path: Path, best_epoch: int) -> Callable[[dict], None]:
    """A check that a best-epoch checkpoint holds the epoch ``best_epoch``."""

    def check(payload: dict) -> None:
        if payload["state"]["best_epoch"] != best_epoch:
            raise UserError(
                f"{path} holds epoch {payload['state']['best_epoch']}, not the best epoch "
                f"{best_epoch} that {LATEST_CHECKPOINT} names"
            )

    return check
