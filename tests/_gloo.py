"""Start test workers as processes of one gloo job.

Why the workers leave with ``os._exit``: gloo's worker threads free a finished collective only
after the caller has been woken, and a collective can hold Python objects: tensors made in Python,
and the ``contextvars`` context that ``backward()`` keeps in torch's thread-local state, which
collectives issued during ``backward()`` (DDP's gradient all-reduce) capture. A gloo barrier also
holds the collectives still in flight when it starts. Freeing a Python object needs the GIL; if
Python has begun to finalise by then, the gloo thread is ended and libstdc++ aborts the process
("terminate called without an active exception", SIGABRT). Core dumps of failing runs showed
``ProcessGroupGloo::runLoop`` -> ``~AsyncBarrierWork`` -> ``~ThreadLocalState`` and
``~AsyncAllreduceWork`` -> ``TensorImpl::decref_pyobject``, each ending in ``take_gil`` ->
``pthread_exit``; it hit about 1 run in 20 under load. ``destroy_process_group`` does not join
gloo's threads, so no teardown order rules it out. A worker whose test code has finished and
saved its results therefore skips interpreter finalisation; a worker that raised still goes
through ``torch.multiprocessing.spawn``'s error path, so failures are reported as before. (The
runner and ``examples/05_distributed.py``, which must exit normally, end on
``monitored_barrier`` instead; see ``_Dist.barrier`` in the runner.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def spawn_gloo(worker: Callable[..., None], tmp_path: Path, world: int, late_init: bool = False) -> None:
    """Run ``worker(rank, out_dir)`` in ``world`` processes that share a gloo process group.

    ``worker`` must be a module-level function (it is pickled); it writes what the test checks
    into ``out_dir`` (``tmp_path``). With ``late_init`` the group does not exist yet when the
    worker starts: it is called as ``worker(rank, out_dir, init_group)`` and makes the group by
    calling ``init_group()``.
    """
    args = (worker, str(tmp_path / "init"), str(tmp_path), world, late_init)
    mp.spawn(_run, args=args, nprocs=world, join=True)


def _run(rank: int, worker: Callable[..., None], init_file: str, out_dir: str, world: int, late_init: bool) -> None:
    def init_group() -> None:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

    if late_init:
        worker(rank, out_dir, init_group)
    else:
        init_group()
        worker(rank, out_dir)
    dist.barrier()  # no rank tears gloo down while another is still in a collective
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
