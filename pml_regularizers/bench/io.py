"""Atomic file writes shared by the runner and the data loaders.

A file is written under a temporary name in its target folder, flushed to disk and moved into
place with :func:`os.replace`, so a reader (or a resumed run) never sees a half-written file, and a
failed write leaves nothing behind. On request the file it replaces is kept as a backup.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["atomic_write", "atomic_torch_save", "write_json"]


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


def atomic_torch_save(obj: Any, path: str | os.PathLike, backup: str | os.PathLike | None = None) -> Path:
    """:func:`torch.save` ``obj`` to ``path`` atomically, keeping the file it replaces as ``backup``
    when one is given."""
    return atomic_write(path, lambda f: torch.save(obj, f), backup=backup)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))
