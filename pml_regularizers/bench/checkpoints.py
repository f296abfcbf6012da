"""Training checkpoints of the benchmark runner: written atomically with the previous one kept as a
backup, read with ``weights_only=True`` and checked, and read from the backup when the newest one
cannot be used.

A checkpoint is a dict with the keys :data:`CHECKPOINT_KEYS`: the ``state_dict`` of each model
(``models``), of the metric loss (``loss``) and of each optimizer (``optimizers``), and the fold's
progress (``state``, with the keys :data:`STATE_KEYS`). Messages never quote torch's own advice for
a file a weights-only load refuses, which is to load it with ``weights_only=False``: that runs
whatever code the file holds.
"""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import UserError
from .io import atomic_torch_save

__all__ = [
    "CHECKPOINT_KEYS",
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


def save_checkpoint(payload: dict, path: Path, keep_previous: bool) -> None:
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
    """
    atomic_torch_save(payload, path, backup=backup_path(path) if keep_previous else None)


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read the checkpoint ``path`` with ``weights_only=True`` and check its keys.

    Parameters
    ----------
    path : Path
        A file written by :func:`save_checkpoint`.
    map_location : str or torch.device
        Where to put its tensors.

    Returns
    -------
    dict
        Its contents.

    Raises
    ------
    UserError
        When the file cannot be read, holds objects a weights-only load refuses, or lacks a key;
        the message starts with the file's path.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message here advises weights_only=False, which would run the file's code
        raise UserError(
            f"{path} is damaged or holds objects that a weights-only load refuses "
            "(a pml-bench checkpoint holds only tensors and plain containers)"
        ) from None
    except OSError as err:
        raise UserError(f"{path} cannot be read: {err.strerror or err}") from err
    except Exception as err:  # noqa: BLE001 -- a damaged file makes torch.load raise many kinds
        raise UserError(f"{path} is truncated or not a PyTorch checkpoint ({type(err).__name__})") from err
    if not isinstance(payload, dict):
        raise UserError(f"{path} holds a {type(payload).__name__}, not a pml-bench checkpoint (a dict)")
    _require_keys(payload, CHECKPOINT_KEYS, path, "")
    if not isinstance(payload["state"], dict):
        raise UserError(f"{path} has a 'state' that is not a dict")
    _require_keys(payload["state"], STATE_KEYS, path, " in its 'state'")
    return payload


def load_checkpoint(
    path: Path, apply: Callable[[dict], Any], map_location: str | torch.device = "cpu"
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
            payload = read_checkpoint(candidate, map_location)
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
