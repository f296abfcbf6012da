"""An exclusive lock on an experiment folder, so that two runs never train into the same folder.

The lock is an ``fcntl.flock`` on the file :data:`LOCK_NAME` inside the folder. The operating
system releases it when the process that holds it exits, however it exits (even killed with
SIGKILL), so a lock is never left behind. A forked child (a DataLoader worker) would share the
lock through its copy of the file descriptor and keep it after its parent was killed, so every
child closes its copy as it starts (:func:`os.register_at_fork`): only the process that took the
lock holds it. While held, the file names its holder (PID, host and command) for the message a
second process gives. On platforms without ``fcntl`` (Windows) folders are not locked, and a
warning says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import UserError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "ExperimentLock", "pid_alive"]

LOGGER = logging.getLogger(__name__)
LOCK_NAME = ".pml-bench.lock"
# How long acquire() waits for a lock whose named holder has exited: processes it left behind
# (children started before this module closed lock descriptors in children) may hold it that long.
GONE_HOLDER_WAIT_S = 10.0

# The descriptors of the locks this process holds, closed in every child it forks.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


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
        """Take the lock, without waiting for a running holder.

        When the holder the lock file names has exited but the lock is still held (by processes
        it left behind), this waits up to :data:`GONE_HOLDER_WAIT_S` for them to let it go.

        Raises
        ------
        UserError
            When a running process holds it (the message names that process), when processes left
            behind by an exited holder keep it past the wait (the message says so and how to stop
            them), or when the lock file cannot be created.
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
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        _HELD.add(fd)

    def _lock(self, fd: int) -> None:
        """flock ``fd``, waiting up to :data:`GONE_HOLDER_WAIT_S` while the holder the file names
        has exited (what it left behind may still hold the lock for a moment)."""
        assert fcntl is not None  # acquire() returned early without fcntl
        deadline = time.monotonic() + GONE_HOLDER_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = self._holder()
                if holder.alive is not False:
                    raise UserError(
                        f"{self.folder} is in use by {holder.text}; wait until it has finished, or stop "
                        "it, then run the command again"
                    ) from None
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{self.folder} is locked by processes left behind by {holder.text}, which has exited; "
                        f"they still held the lock after {GONE_HOLDER_WAIT_S:.0f} s: stop them "
                        f"(for example: fuser -k {self.path}), then run the command again"
                    ) from None
                time.sleep(0.1)
            except OSError as err:  # a file system without locks
                raise UserError(f"cannot lock {self.path}: {err.strerror or err}") from err

    def release(self) -> None:
        """Give the lock up (nothing when it is not held)."""
        if self._fd is None:
            return
        _HELD.discard(self._fd)
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the file releases the flock
        self._fd = None

    def _holder(self) -> _Holder:
        """The holder as the lock file names it; it may not have written its name yet."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host, command = int(holder["pid"]), str(holder["host"]), holder["command"]
        except (OSError, ValueError, TypeError, KeyError):
            return _Holder("another process (it has not written its name yet)", None)
        alive = pid_alive(pid) if host == socket.gethostname() else None
        return _Holder(f"PID {pid} on host {host} (command {command})", alive)


@dataclass(frozen=True)
class _Holder:
    """The process a lock file names: how messages name it, and whether it runs (None: unknown,
    on another host or not named)."""

    text: str
    alive: bool | None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
