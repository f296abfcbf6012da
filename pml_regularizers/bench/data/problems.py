"""Problems with a data set that a loader works around and says so: a :class:`DataWarning` for
files a listing skipped, image data decoded despite damage and caches rebuilt; and
:class:`ImageDecodeError` for an image file that cannot be decoded at all."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DAMAGED_DATA", "DataWarning", "ImageDecodeError", "SkippedFiles", "warn_data"]

FIRST_NAMED = 5  # how many skipped files a warning names
DAMAGED_DATA = "damaged image data"  # how a DataWarning's reason starts for a file decoded despite damage


class DataWarning(UserWarning):
    """Something in a data set that the loader worked around, named in the message: files a
    listing skipped, damaged image data decoded as far as it goes, a cache file rebuilt.

    Parameters
    ----------
    message : str
        What happened; it names the file, or the first few files.
    files : sequence of (str, Path), optional
        Every file it concerns, with the reason for each (the message may name only the first
        few); ``pml-bench check-data`` lists them all.
    """

    def __init__(self, message: str, files: Sequence[tuple[str, Path]] = ()) -> None:
        super().__init__(message)
        self.files = list(files)


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; the message is ``"cannot decode image <path>: <why>"``.

    Raised in a DataLoader worker, it reaches the main process with the worker's traceback folded
    into its message (PyTorch re-raises the exception's type with that text); :attr:`summary` is
    the original one-line message either way.
    """

    @property
    def summary(self) -> str:
        """The original message, without a DataLoader worker's traceback."""
        text = str(self)
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in text:
            lines = [line for line in text.splitlines() if marker in line]
            if lines:
                text = lines[-1].split(marker, 1)[1]
        return text.strip()


def warn_data(message: str, files: Sequence[tuple[str, Path]] = ()) -> None:
    """Issue a :class:`DataWarning` with ``message`` (and ``files``), attributed to the caller's
    caller."""
    warnings.warn(DataWarning(message, files), stacklevel=3)


class SkippedFiles:
    """The entries a listing of ``root`` passed over, by reason, for one warning that counts and
    names them.

    Parameters
    ----------
    root : Path
        The listed folder; entries are named relative to it.
    what : str
        The listing, as the warning names it (for example ``"image folder /data/x"``).
    """

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        self.what = what
        self.by_reason: dict[str, list[Path]] = {}

    def add(self, reason: str, path: Path) -> None:
        """Record that ``path`` was skipped because of ``reason``."""
        self.by_reason.setdefault(reason, []).append(path)

    def __len__(self) -> int:
        return sum(len(paths) for paths in self.by_reason.values())

    def describe(self) -> str:
        """``"<reason>: N (a, b, c and 4 more); <reason>: M (d)"``, the entries named relative to
        ``root``, at most :data:`FIRST_NAMED` a reason."""
        parts = []
        for reason, paths in self.by_reason.items():
            shown = ", ".join(self._name(p) for p in paths[:FIRST_NAMED])
            more = f" and {len(paths) - FIRST_NAMED} more" if len(paths) > FIRST_NAMED else ""
            parts.append(f"{reason}: {len(paths)} ({shown}{more})")
        return "; ".join(parts)

    def warn(self, used: int) -> None:
        """One :class:`DataWarning` naming what was skipped beside the ``used`` files; none when
        nothing was."""
        if len(self):
            files = [(reason, path) for reason, paths in self.by_reason.items() for path in paths]
            warn_data(
                f"{self.what}: {len(self)} entries skipped beside the {used} images read: {self.describe()}", files
            )

    def _name(self, path: Path) -> str:
        try:
            return os.fspath(path.relative_to(self.root))
        except ValueError:
            return os.fspath(path)
