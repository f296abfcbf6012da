"""The experiment-folder lock: only the process that took it holds it (not the DataLoader workers
it forks, which used to keep it after their parent was killed), and a holder that has exited is
never named as if it ran."""

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pml_regularizers.bench import UserError
from pml_regularizers.bench.protocol import lock as lock_module
from pml_regularizers.bench.protocol.lock import LOCK_NAME, ExperimentLock

# A run in miniature: take the lock, fork a worker that outlives its parent, say so, wait to be killed.
HOLDER = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from pathlib import Path
    from pml_regularizers.bench.protocol.lock import ExperimentLock

    def worker():
        time.sleep(60)

    ExperimentLock(Path(sys.argv[1]), "holder").acquire()
    child = multiprocessing.get_context("fork").Process(target=worker, daemon=False)
    child.start()
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(lock_module.fcntl is None, reason="folders are not locked without fcntl")
def test_forked_children_of_a_killed_holder_do_not_keep_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    orphan = int(holder.stdout.readline())
    try:
        with pytest.raises(UserError, match=f"is in use by PID {holder.pid} on host {socket.gethostname()}"):
            ExperimentLock(tmp_path, "second").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(orphan, 0)  # the forked child still runs
        second = ExperimentLock(tmp_path, "second")
        start = time.monotonic()
        second.acquire()  # at once: the orphan closed its copy of the lock when it was forked
        assert time.monotonic() - start < 1.0
        second.release()
    finally:
        for pid in (holder.pid, orphan):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _hold_unnamed(path, ready, release):
    """Hold the flock on ``path`` without naming itself in the file (as a child left behind does)."""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(30)


@pytest.mark.skipif(lock_module.fcntl is None, reason="folders are not locked without fcntl")
def test_a_lock_kept_by_what_an_exited_holder_left_is_waited_for_and_named_as_such(tmp_path, monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a PID that has exited
    lock_file = tmp_path / LOCK_NAME
    lock_file.write_text(f'{{"pid": {gone.pid}, "host": "{socket.gethostname()}", "command": "pml-bench run"}}')
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    keeper = context.Process(target=_hold_unnamed, args=(str(lock_file), ready, release))
    keeper.start()
    try:
        assert ready.wait(30)
        monkeypatch.setattr(lock_module, "GONE_HOLDER_WAIT_S", 0.5)
        with pytest.raises(UserError) as info:
            ExperimentLock(tmp_path, "second").acquire()
        message = str(info.value)
        assert f"locked by processes left behind by PID {gone.pid}" in message and "which has exited" in message
        assert "is in use by" not in message  # a dead process is never named as if it ran
        monkeypatch.setattr(lock_module, "GONE_HOLDER_WAIT_S", 30.0)
        second = ExperimentLock(tmp_path, "second")
        release.set()  # what was left behind exits while acquire waits: the lock is taken
        second.acquire()
        second.release()
    finally:
        release.set()
        keeper.join(30)
