"""Atomic file writes and safe reads of PyTorch files, shared by the runner and the data loaders.

A file is written under a temporary name in its target folder, flushed to disk and moved into
place with :func:`os.replace`, so a reader (or a resumed run) never sees a half-written file, and a
failed write leaves nothing behind. On request the file it replaces is kept as a backup.

A PyTorch file is read with ``torch.load(..., weights_only=True)`` (:func:`read_torch_file`), which
rebuilds only tensors and plain containers and so never runs code the file holds. Its errors are
reported without torch's own advice for a file that load refuses, which is to load it with
``weights_only=False``: that would run the file's code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["atomic_write", "atomic_torch_save", "check_writable", "error_summary", "read_torch_file", "write_json"]


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    suffix: str = ".tmp",
    backup: str | os.PathLike | None = None,
) -> Path:
    """Call ``write`` on a temporary binary file beside ``path``, then move it to ``path``.

    If ``write`` raises, the temporary file is deleted and ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if needed.
    write : callable
        Receives the open temporary file; what it returns is ignored.
    suffix : str
        Suffix of the temporary file's name.
    backup : str or os.PathLike, optional
        Where to move the file that ``path`` held, once the new one is complete on disk (it
        replaces the previous backup); the new file is moved in right after.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Check, before any work is done, that :func:`atomic_write` can write ``path``: the nearest
    existing folder on its way is a folder, and a file can be created in it (which also refuses
    read-only and virtual file systems such as ``/proc``).

    Raises
    ------
    ValueError
        Saying which: ``path`` is a folder, lies under a file, or cannot be written there (with
        the system's reason).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the file to write")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ValueError(f"{path} lies under {existing}, which is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(
            f"{path} cannot be written: creating a file in {existing} fails ({err.strerror or err})"
        ) from None


def atomic_torch_save(obj: Any, path: str | os.PathLike, backup: str | os.PathLike | None = None) -> Path:
    """:func:`torch.save` ``obj`` to ``path`` atomically, keeping the file it replaces as ``backup``
    when one is given."""
    return atomic_write(path, lambda f: torch.save(obj, f), backup=backup)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def read_torch_file(path: str | os.PathLike, kind: str = "file", map_location: str | torch.device = "cpu") -> Any:
    """Read a file written by :func:`torch.save` with ``weights_only=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    kind : str
        What the file should be, for the message (``"file"``, ``"checkpoint"``...).
    map_location : str or torch.device
        Where to put its tensors.

    Returns
    -------
    object
        What the file holds: tensors in plain containers.

    Raises
    ------
    OSError
        When the file cannot be opened (missing, a folder, no permission).
    ValueError
        When the file is truncated or not a PyTorch file, or holds objects that a weights-only
        load does not rebuild (the first such object's name, when torch gives one). The message
        starts with ``path``; it never quotes torch's advice to load with ``weights_only=False``,
        nor chains torch's error, which carries that advice.
    """
    path = Path(path)
    with open(path, "rb") as stream:  # OSError here: missing, a folder, not readable
        try:
            return torch.load(stream, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 -- a damaged file makes torch.load raise many kinds
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            if isinstance(err, pickle.UnpicklingError) and refused is not None:
                raise ValueError(
                    f"{path} holds Python objects besides tensors ({refused.group(1)}), which a weights-only "
                    "load does not rebuild"
                ) from None
            raise ValueError(f"{path} is truncated or not a PyTorch {kind} ({error_summary(err)})") from None


def error_summary(err: BaseException) -> str:
    """The first sentence of ``err``'s message, or its type alone when the message speaks of
    ``weights_only`` (torch's messages advise turning the safe loader off)."""
    text = str(err).strip()
    if not text or "weights_only" in text:
        return type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0].split('. ')[0][:200]}"
