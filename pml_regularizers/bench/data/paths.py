"""Checks of a data set's root that say what is wrong with it: missing, or of the wrong kind."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def require_path(path: Path, what: str, layout: str, kind: Literal["folder", "file"]) -> None:
    """Check that ``path`` exists and is a folder or a file, as ``kind`` says.

    Parameters
    ----------
    path : Path
        The path to check.
    what : str
        What the path is, as messages name it (e.g. ``"Omniglot root"``, ``"features file"``).
    layout : str
        What is expected inside the folder, or in the file, quoted in messages.
    kind : {"folder", "file"}
        What ``path`` must be.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    NotADirectoryError
        When ``kind`` is ``"folder"`` and ``path`` is not a folder.
    IsADirectoryError
        When ``kind`` is ``"file"`` and ``path`` is a folder.
    ValueError
        When ``kind`` is neither.
    """
    if kind not in ("folder", "file"):
        raise ValueError(f"kind must be 'folder' or 'file', got {kind!r}")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; expected {layout}")
    if kind == "folder" and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder; expected {layout}")
    if kind == "file" and path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file; expected {layout}")
