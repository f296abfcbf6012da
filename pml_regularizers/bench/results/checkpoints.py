"""Training checkpoints of the benchmark runner: written atomically with the previous one kept as a
backup, read with ``weights_only=True`` and checked, and read from the backup when the newest one
cannot be used.

A checkpoint is a dict with the keys :data:`CHECKPOINT_KEYS`: the ``state_dict`` of each model
(``models``), of the metric loss (``loss``) and of each optimizer (``optimizers``), and the fold's
progress (``state``, with the keys :data:`STATE_KEYS`, and ``cpu_seconds`` and ``wall_seconds``
spent on the fold up to that epoch, which checkpoints saved before they were recorded lack). It also
records what it belongs to (``owner``, a :class:`CheckpointOwner`: the experiment, its config's
digest, the seed and the fold), and a reader that says whose checkpoint it wants refuses one of
another owner; checkpoints written before ``owner`` existed are read without that check. Messages
never quote torch's own advice for a file a weights-only load refuses, which is to load it with
``weights_only=False``: that runs whatever code the file holds.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..spec.run_spec import RunSpec
from .io import atomic_torch_save, read_torch_file

__all__ = [
    "CHECKPOINT_KEYS",
    "CheckpointOwner",
    "STATE_KEYS",
    "LoadedCheckpoint",
    "apply_checkpoint",
    "backup_path",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_KEYS = ("models", "loss", "optimizers", "state")
STATE_KEYS = ("epoch", "best_epoch", "best_score", "done")


@dataclass(frozen=True)
class CheckpointOwner:
    """What a checkpoint belongs to: one fold of one seed of one experiment.

    Attributes
    ----------
    experiment : str
        The experiment's name (:func:`~pml_regularizers.bench.spec.compose.experiment_name`).
    config_digest : str
        Its config's digest (:func:`~pml_regularizers.bench.spec.compose.config_digest`).
    seed, fold : int
        The run the checkpoint holds.
    """

    experiment: str
    config_digest: str
    seed: int
    fold: int

    @classmethod
    def of(cls, spec: RunSpec, seed: int, fold: int) -> CheckpointOwner:
        """The owner of fold ``fold`` of seed ``seed`` of the experiment ``spec``."""
        return cls(spec.experiment, spec.digest, seed, fold)

    def to_dict(self) -> dict:
        """The owner as a checkpoint stores it."""
        return asdict(self)

    def describe(self) -> str:
        """``seed S, fold F of experiment E (config digest D)``, for messages."""
        return (
            f"seed {self.seed}, fold {self.fold} of experiment {self.experiment} (config digest {self.config_digest})"
        )


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint that :func:`load_checkpoint` read and applied.

    Attributes
    ----------
    payload : dict
        The checkpoint's contents.
    path : Path
        The file it came from: the one asked for, or its backup.
    problem : str or None
        Why the file asked for was not used (missing, or what is wrong with it); None when it was.
    """

    payload: dict
    path: Path
    problem: str | None


def backup_path(path: Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` held before
    (``checkpoint_latest.pt`` -> ``checkpoint_latest.backup.pt``)."""
    return path.with_name(f"{path.stem}.backup{path.suffix}")


def save_checkpoint(payload: dict, path: Path, keep_previous: bool, owner: CheckpointOwner | None = None) -> None:
    """Write ``payload`` to ``path`` atomically.

    Parameters
    ----------
    payload : dict
        The checkpoint, with the keys :data:`CHECKPOINT_KEYS`.
    path : Path
        Destination.
    keep_previous : bool
        Keep the file that ``path`` held as :func:`backup_path` once the new one is complete on
        disk, so that a damaged newest checkpoint leaves the one before it to resume from.
    owner : CheckpointOwner, optional
        Recorded as the checkpoint's ``owner``, for readers to check.
    """
    if owner is not None:
        payload = {**payload, "owner": owner.to_dict()}
    atomic_torch_save(payload, path, backup=backup_path(path) if keep_previous else None)


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu", owner: CheckpointOwner | None = None) -> dict:
    """Read the checkpoint ``path`` with ``weights_only=True`` and check its keys, and its owner.

    Parameters
    ----------
    path : Path
        A file written by :func:`save_checkpoint`.
    map_location : str or torch.device
        Where to put its tensors.
    owner : CheckpointOwner, optional
        Whose checkpoint this must be. A checkpoint that records another owner is refused (one
        that records none, written before owners were recorded, is taken as it is).

    Returns
    -------
    dict
        Its contents.

    Raises
    ------
    UserError
        When the file cannot be read, holds objects a weights-only load refuses, lacks a key, or
        belongs to another owner than ``owner`` (both named); the message starts with the file's
        path.
    """
    try:
        payload = read_torch_file(path, "checkpoint", map_location)
    except OSError as err:
        raise UserError(f"{path} cannot be read: {err.strerror or err}") from err
    except ValueError as err:
        raise UserError(str(err)) from None
    if not isinstance(payload, dict):
        raise UserError(f"{path} holds a {type(payload).__name__}, not a pml-bench checkpoint (a dict)")
    _require_keys(payload, CHECKPOINT_KEYS, path, "")
    if not isinstance(payload["state"], dict):
        raise UserError(f"{path} has a 'state' that is not a dict")
    _require_keys(payload["state"], STATE_KEYS, path, " in its 'state'")
    if owner is not None and "owner" in payload:
        _check_owner(payload["owner"], owner, path)
    return payload


def _check_owner(recorded: object, owner: CheckpointOwner, path: Path) -> None:
    try:
        found = CheckpointOwner(**recorded)  # type: ignore[arg-type]
    except TypeError:
        raise UserError(f"{path} has an 'owner' that is not a pml-bench checkpoint's: {recorded!r}") from None
    if found != owner:
        raise UserError(
            f"{path} belongs to {found.describe()}, not to {owner.describe()}; "
            "a checkpoint was copied or moved between runs"
        )


def load_checkpoint(
    path: Path,
    apply: Callable[[dict], Any],
    map_location: str | torch.device = "cpu",
    owner: CheckpointOwner | None = None,
) -> LoadedCheckpoint | None:
    """Read ``path`` and hand it to ``apply``; fall back to its backup if either step fails.

    Parameters
    ----------
    path : Path
        The checkpoint wanted.
    apply : callable
        Receives the checkpoint's contents (e.g. loads them into the models); raises
        :class:`UserError` when they do not fit, which makes the next file be tried.
    map_location : str or torch.device
        Where to put the tensors.
    owner : CheckpointOwner, optional
        Whose checkpoint it must be (:func:`read_checkpoint`); a file of another owner is passed
        over like a damaged one.

    Returns
    -------
    LoadedCheckpoint or None
        The first of ``path`` and :func:`backup_path` that was read and applied, or None when
        neither exists.

    Raises
    ------
    UserError
        When one of them exists but neither can be used: the problem of the first that exists.
    """
    problem, errors = None, []
    for candidate in (path, backup_path(path)):
        if not candidate.exists():
            problem = problem or f"{candidate} is missing"
            continue
        try:
            payload = read_checkpoint(candidate, map_location, owner)
            apply(payload)
        except UserError as err:
            problem = problem or str(err)
            errors.append(err)
            continue
        return LoadedCheckpoint(payload, candidate, problem)
    if errors:
        raise errors[0]
    return None


def apply_checkpoint(
    payload: dict,
    path: Path,
    models: dict[str, torch.nn.Module],
    loss: torch.nn.Module | None = None,
    optimizers: dict[str, Any] | None = None,
) -> None:
    """Load a checkpoint's contents into models, the metric loss and optimizers.

    Parameters
    ----------
    payload : dict
        What :func:`read_checkpoint` read from ``path``.
    path : Path
        The file, named in the error.
    models : dict of str to torch.nn.Module
        Each gets the ``state_dict`` saved under its key in ``payload["models"]``.
    loss : torch.nn.Module, optional
        Gets ``payload["loss"]``.
    optimizers : dict, optional
        Each (an optimizer, or a gradient scaler) gets the state saved under its key in
        ``payload["optimizers"]``.

    Raises
    ------
    UserError
        When a key is missing or a state does not fit; the message names ``path``.
    """
    try:
        for k, m in models.items():
            m.load_state_dict(payload["models"][k])
        if loss is not None:
            loss.load_state_dict(payload["loss"])
        for k, o in (optimizers or {}).items():
            o.load_state_dict(payload["optimizers"][k])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = f"no {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
        raise UserError(f"{path} does not match this experiment's models ({textwrap.shorten(detail, 200)})") from err


def _require_keys(mapping: dict, keys: tuple[str, ...], path: Path, where: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise UserError(
            f"{path} lacks the key(s) {', '.join(map(repr, missing))}{where}; "
            "it is not a checkpoint of this pml-bench version"
        )
