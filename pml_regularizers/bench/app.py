"""``pml-bench run`` and ``pml-bench evaluate`` as Hydra applications.

The command line after ``run`` or ``evaluate`` is Hydra's own: overrides (``key=value``, ``+key=value``,
``group=option``), ``--help`` (the config groups with their choices, and the config), ``--cfg
job|hydra|all`` (the composed config, then the experiment folder it names, without training;
``--resolve`` resolves interpolations), ``--info`` and ``--multirun`` / ``-m`` (a sweep such as
``-m regularizer=none,skewed_mean seeds=5``, whose jobs Hydra's joblib launcher runs in parallel
local processes; ``hydra.launcher.n_jobs=N`` caps them).

Every job's config is checked before anything starts (:meth:`RunSpec.from_config
<pml_regularizers.bench.spec.run_spec.RunSpec.from_config>`, then the targets' arguments), each
job of a sweep included, so a typo costs no run: an error is one ``pml-bench: error:`` line and
exit status 2. A sweep prints each job's outcome as it ends and a table of all of them at the end;
its status is 2 when a job failed.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["HYDRA_FLAGS", "hydra_command", "record_job_status", "split_arguments", "sweep_jobs"]

CONF_PATH = "pkg://pml_regularizers.bench.conf"
STATUS_FILE_VARIABLE = "PML_BENCH_JOB_STATUS_FILE"
# Hydra's flags that print something and train nothing.
SHOW_FLAGS = ("-h", "--help", "--hydra-help", "-i", "--info", "-sc", "--shell-completion")
CFG_FLAGS = ("-c", "--cfg")
MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's flags that take a value as the next argument (--info's is optional).
VALUED_FLAGS = ("-c", "--cfg", "-p", "--package", "-i", "--info", "-cp", "--config-path", "-cn", "--config-name")
HYDRA_FLAGS = (*SHOW_FLAGS, *CFG_FLAGS, *MULTIRUN_FLAGS, *VALUED_FLAGS, "--resolve")


def split_arguments(argv: Sequence[str]) -> tuple[list[str], set[str]]:
    """Hydra's overrides in ``argv``, and its flags (without their values)."""
    overrides: list[str] = []
    flags: set[str] = set()
    arguments = iter(argv)
    for argument in arguments:
        if not argument.startswith("-"):
            overrides.append(argument)
            continue
        name = argument.split("=", 1)[0]
        flags.add(name)
        if name in VALUED_FLAGS and "=" not in argument:
            value = next(arguments, None)
            if value is not None and "=" in value and name in ("-i", "--info"):
                overrides.append(value)  # --info takes an optional value; this is an override
    return overrides, flags


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of each job of a sweep, as Hydra's basic sweeper runs them: the cartesian
    product of the sweep overrides' values (``a=1,2``, ``range(...)``, ``choice(...)``), in their
    order, each job keeping the plain overrides.

    Raises
    ------
    UserError
        For an override Hydra cannot parse.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(str(err)) from err
    options = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [[str(o) for o in job] for job in itertools.product(*options)]


def hydra_command(
    command: str,
    argv: Sequence[str],
    job: Callable[[Any], int],
    check: Callable[[Sequence[str]], Path],
    report_error: Callable[[BaseException], int],
) -> int:
    """Run ``pml-bench <command> <argv>`` through ``@hydra.main``.

    Parameters
    ----------
    command : str
        ``"run"`` or ``"evaluate"``, for Hydra's usage line.
    argv : sequence of str
        What follows the command: Hydra's flags and overrides.
    job : callable
        ``job(cfg)``: runs one composed config (the task function's config, with Hydra's runtime
        choices reachable through ``HydraConfig``); returns its exit status and reports its own
        errors.
    check : callable
        ``check(overrides)``: checks the config the overrides compose and returns its experiment
        folder; raises a :class:`~pml_regularizers.bench.errors.UserError` for one that cannot run.
    report_error : callable
        Prints an error raised by ``check`` as one line; returns the exit status.

    Returns
    -------
    int
        The exit status.
    """
    overrides, flags = split_arguments(argv)
    if flags & set(SHOW_FLAGS):
        return _hydra_main(command, argv, job)
    multirun = bool(flags & set(MULTIRUN_FLAGS))
    try:
        folders = [check(job_overrides) for job_overrides in (sweep_jobs(overrides) if multirun else [overrides])]
    except UserError as err:
        return report_error(err)
    if flags & set(CFG_FLAGS):
        status = _hydra_main(command, argv, job)
        print(f"# experiment folder: {folders[0]}")
        return status
    if not multirun:
        return _hydra_main(command, argv, job)
    with tempfile.TemporaryDirectory(prefix="pml-bench-sweep-") as temporary:
        status_file = Path(temporary) / "jobs.jsonl"
        status = _hydra_main(command, [*argv, f"++hydra.job.env_set.{STATUS_FILE_VARIABLE}={status_file}"], job)
        finished = [json.loads(line) for line in status_file.read_text().splitlines()] if status_file.exists() else []
    failed = [f for f in finished if f["status"] != 0]
    shared = set.intersection(*(set(f["overrides"]) for f in finished)) if len(finished) > 1 else set()
    lines = [f"sweep: {len(finished)} of {len(folders)} jobs ended, {len(failed)} failed"]
    for f in finished:
        varying = " ".join(o for o in f["overrides"] if o not in shared)
        lines.append(f"  {'failed' if f['status'] else 'ok    '}  {varying}")
    print("\n".join(lines))
    return status or (2 if failed or len(finished) < len(folders) else 0)


def record_job_status(overrides: Sequence[str], status: int) -> None:
    """Append a sweep job's outcome to the file the sweep reads at its end (:func:`hydra_command`);
    nothing outside a sweep."""
    path = os.environ.get(STATUS_FILE_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as stream:  # one short line, appended whole
            stream.write(json.dumps({"overrides": list(overrides), "status": status}) + "\n")


def _hydra_main(command: str, argv: Sequence[str], job: Callable[[Any], int]) -> int:
    """``@hydra.main`` over ``job`` with ``argv`` as its command line; the job's status (Hydra's
    own exit status for what Hydra reports itself)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    statuses: list[int] = []

    def task(cfg: DictConfig) -> int:
        status = job(cfg)
        statuses.append(status)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            record_job_status(HydraConfig.get().overrides.task, status)
        return status

    app = hydra.main(config_path=CONF_PATH, config_name="config", version_base="1.3")(task)
    saved = sys.argv
    sys.argv = [f"pml-bench {command}", *argv]
    try:
        app()
    except SystemExit as exit_:  # Hydra exits after --help and for its own errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        sys.argv = saved
    return statuses[0] if len(statuses) == 1 else 0
