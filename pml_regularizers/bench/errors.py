"""What the benchmark runner reports to its user: errors that say what is wrong and what to do,
never a traceback (``pml-bench`` prints each as one ``pml-bench: error:`` line and exits with status
2), and the warning about data it worked around. Nothing heavy is imported here, so the command line
can catch them before torch is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["ConfigError", "DataWarning", "ImageDecodeError", "UserError"]


class UserError(Exception):
    """A command that cannot run as given: a config, a path, a data set or an experiment folder
    that does not fit. The message says what is wrong and names the key, file or folder;
    ``pml-bench`` prints it as one ``pml-bench: error:`` line and exits with status 2."""


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the key and what it accepts."""


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
