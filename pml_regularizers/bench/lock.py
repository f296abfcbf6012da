"""An exclusive lock on an experiment folder, so that two runs never train into the same folder.

The lock is an ``fcntl.flock`` on the file :data:`LOCK_NAME` inside the folder. The operating
system releases it when the process that holds it exits, however it exits (even killed with
SIGKILL), so a lock is never left behind. While held, the file names its holder (PID, host and
command) for the message a second process gives. On platforms without ``fcntl`` (Windows) folders
are not locked, and a warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from types import ModuleType

from .config import UserError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "ExperimentLock"]

LOGGER = logging.getLogger(__name__)
LOCK_NAME = ".pml-bench.lock"


class ExperimentLock:
    """The lock on one experiment folder, held by at most one process at a time.

    Parameters
    ----------
    folder : Path
        The experiment folder (created on :meth:`acquire` if missing).
    command : str
        The command of this process, named to a second process that finds the folder in use.
    """

    def __init__(self, folder: Path, command: str) -> None:
        self.folder = folder
        self.command = command
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, without waiting.

        Raises
        ------
        UserError
            When another process holds it (the message names that process), or when the lock file
            cannot be created.
        """
        if fcntl is None:
            LOGGER.warning("folders cannot be locked on this platform: start no second run on %s", self.folder)
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot create {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{self.folder} is in use by {self._holder()}; wait until it has finished, or stop "
                "it, then run the command again"
            ) from None
        except OSError as err:  # a file system without locks
            os.close(fd)
            raise UserError(f"cannot lock {self.path}: {err.strerror or err}") from err
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (nothing when it is not held)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the file releases the flock
        self._fd = None

    def _holder(self) -> str:
        """The holder as the lock file names it; it may not have written its name yet."""
        try:
            holder = json.loads(self.path.read_text())
            return f"PID {holder['pid']} on host {holder['host']} (command {holder['command']})"
        except (OSError, ValueError, TypeError, KeyError):
            return "another process (it has not written its name yet)"
