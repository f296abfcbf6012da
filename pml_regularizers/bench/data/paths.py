"""Checks of a data set's root that say what is wrong with it: missing, or of the wrong kind."""

from __future__ import annotations

from pathlib import Path


def require_folder(path: Path, what: str, layout: str) -> None:
    """Check that ``path`` is a folder.

    Parameters
    ----------
    path : Path
        The folder to check.
    what : str
        What the folder is, as messages name it (e.g. ``"Omniglot root"``).
    layout : str
        The layout expected inside it, quoted in messages.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    NotADirectoryError
        When ``path`` exists but is not a folder.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; expected {layout}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder; expected {layout}")


def require_file(path: Path, what: str, layout: str) -> None:
    """Check that ``path`` is a file.

    Parameters
    ----------
    path : Path
        The file to check.
    what : str
        What the file is, as messages name it (e.g. ``"features file"``).
    layout : str
        What the file should hold, quoted in messages.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    IsADirectoryError
        When ``path`` is a folder.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; expected {layout}")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file; expected {layout}")
