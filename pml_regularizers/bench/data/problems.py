"""Problems with a data set that a loader works around and says so, as a
:class:`~pml_regularizers.bench.errors.DataWarning`: files a listing skipped (:class:`SkippedFiles`),
image data decoded despite damage, caches rebuilt (:func:`warn_data`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataWarning

__all__ = ["DAMAGED_DATA", "SkippedFiles", "warn_data"]

FIRST_NAMED = 5  # how many skipped files a warning names
DAMAGED_DATA = "damaged image data"  # how a DataWarning's reason starts for a file decoded despite damage


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
