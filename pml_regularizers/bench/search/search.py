"""A hyperparameter search as "A Metric Learning Reality Check" makes one: an Optuna study on
class-disjoint validation folds, then the chosen setting trained ``final_seeds`` times and tested
once.

Each trial is an ordinary experiment (``test=false``, one seed, the budget's folds, epochs and
patience), in its own folder ``<search>/trials/trial-<digest of its settings>``: locked while it
trains, resumable, and reported like any run. The trial's value is its validation MAP@R over the
folds; the test classes are never embedded or scored. The sampler is Optuna's TPE, seeded; the
pruner (Optuna's median pruner) reads each validated epoch's MAP@R, so a trial that falls behind
stops early. The study lives in a database: by default ``<search>/study.db`` (SQLite, nothing to
set up), or any URL Optuna takes (PostgreSQL, MySQL), so that workers on several machines share
it; ``workers`` processes on this machine do too. A run killed with SIGKILL and started again
continues the study: finished trials are kept, and a trial that was running is retried with the
same settings (at once when its process ran on this machine, else once its heartbeat has lapsed),
which resumes its folder from its last checkpoint.
The best of the first ``trials`` finished trials (by number) is chosen, so that every search of
a study gets the same budget whatever its workers did (the study keeps which trials those were,
once chosen); its setting then runs ``final_seeds`` seeds in ``<search>/final/<name>`` and is
tested once. Workers on other machines run with ``search_only``: trials, and no final runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from ..protocol.cpu_time import process_cpu_seconds
from .budget import SearchBudget
from .space import SearchSpace, parse_space, resolve_space

__all__ = ["SearchResult", "TrialRecord", "run_search", "search_folder"]

LOGGER = logging.getLogger(__name__)
FINISHED = ("COMPLETE", "PRUNED")
FINAL_TIME = "final_time.json"
COUNTED = "counted_trials"  # the study's user attribute that keeps the trials the budget counts


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search, as the report lists it.

    Attributes
    ----------
    number : int
        Optuna's trial number.
    state : str
        ``COMPLETE``, ``PRUNED``, ``FAIL`` or ``RUNNING``.
    value : float or None
        Its validation MAP@R (the last reported one when pruned).
    params : dict
        The searched keys' values.
    epochs : int
        Epochs it trained, over all its folds (before pruning, for a pruned trial).
    cpu_seconds, wall_seconds : float
        CPU time of its run (the DataLoader workers included), and its wall-clock time.
    counted : bool
        Whether it is one of the budget's trials (the first ``trials`` finished, by number).
    folder : str or None
        Its experiment folder (a completed trial's reads with ``pml-bench report FOLDER --split val``).
    """

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int
    cpu_seconds: float
    wall_seconds: float
    counted: bool
    folder: str | None


@dataclass(frozen=True)
class SearchResult:
    """What :func:`run_search` did.

    Attributes
    ----------
    name : str
        The search's name.
    folder : Path
        ``<output_dir>/search/<name>``.
    budget : SearchBudget
    space : dict of str to str
        The searched keys and their ranges, as written.
    best_overrides : list of str
        The chosen setting (empty without a search).
    best_value : float or None
        Its validation MAP@R.
    edges : list of str
        Searched keys whose chosen value lies at an edge of its range: widen them and search again.
    final : Path or None
        The final runs' experiment folder (None for a search run with ``search_only``).
    storage, study_name : str or None
        The Optuna study's storage URL and name (None without a search).
    trials : list of TrialRecord
    search_cpu_seconds, final_cpu_seconds : float
        CPU time of the trials and of the final runs (what this call ran; 0 for runs it found
        finished).
    search_wall_seconds, final_wall_seconds : float
        Their wall-clock time, the same way.
    command : str or None
        The command that made it.
    """

    name: str
    folder: Path
    budget: SearchBudget
    space: dict[str, str]
    best_overrides: list[str]
    best_value: float | None
    edges: list[str]
    final: Path | None
    storage: str | None = None
    study_name: str | None = None
    trials: list[TrialRecord] = field(default_factory=list)
    search_cpu_seconds: float = 0.0
    final_cpu_seconds: float = 0.0
    search_wall_seconds: float = 0.0
    final_wall_seconds: float = 0.0
    command: str | None = None

    def to_json(self) -> dict:
        """The result as JSON-ready data (paths as strings)."""
        data = dataclasses.asdict(self)
        data["folder"], data["final"] = str(self.folder), None if self.final is None else str(self.final)
        for trial in data["trials"]:
            if trial["value"] is not None and not math.isfinite(trial["value"]):
                trial["value"] = None
        return data


def search_folder(output_dir: str | os.PathLike, name: str) -> Path:
    """Where the search ``name`` keeps its study, trials, final runs and report."""
    return Path(output_dir).expanduser() / "search" / name


def run_search(
    name: str,
    overrides: Sequence[str],
    space: Mapping[str, str | None] | None,
    budget: SearchBudget,
    *,
    folder: str | os.PathLike | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    seed: int = 0,
    prune: bool = True,
    heartbeat: int = 60,
    search_only: bool = False,
    command: str | None = None,
) -> SearchResult:
    """Search ``space`` on validation for the config ``overrides`` compose, then run and test the
    chosen setting (the module's description); resumable.

    Parameters
    ----------
    name : str
        The search's name: its folder (:func:`search_folder`) and its Optuna study.
    overrides : sequence of str
        The config's overrides, as for ``pml-bench run`` (the data set, the loss, ...).
    space : mapping, optional
        Search ranges to add to (or, ``None``, drop from) those the config declares
        (:func:`~pml_regularizers.bench.search.space.resolve_space`). Ignored with
        ``budget.trials == 0``.
    budget : SearchBudget
        Trials, epochs, folds, patience and final seeds.
    folder : path, optional
        Where the search keeps its study, trials and final runs; by default
        :func:`search_folder` of the config's ``output_dir``.
    storage : str, optional
        An Optuna storage URL (``postgresql://...``); by default ``<folder>/study.db`` (SQLite).
    study_name : str, optional
        The Optuna study's name in the storage; by default ``name``.
    workers : int
        Processes on this machine that run trials at once.
    seed : int
        The TPE sampler's seed; trial ``n`` draws from ``(seed, n)``
        (:class:`~pml_regularizers.bench.search.sampler.TrialSeededTPESampler`).
    prune : bool
        Stop trials that fall behind (Optuna's median pruner), or train each to its end.
    heartbeat : int
        Seconds between a running trial's heartbeats; a trial silent for twice as long is taken
        as dead and retried.
    search_only : bool
        Run trials until the budget is spent, and stop there: what workers on other machines run
        beside the one that trains and tests the chosen setting.
    command : str, optional
        The command that made the search, for its report.

    Raises
    ------
    UserError
        For a config, a space or a budget that cannot run (before any trial starts), for a storage
        that cannot be opened, and when as many trials failed as the budget holds.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"the search's name must be a folder name, got {name!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an int >= 1, got {workers!r}")
    base = _base_spec(overrides, budget)
    folder = Path(folder) if folder is not None else search_folder(base.output_dir, name)
    parsed = resolve_space(overrides, base.config, space) if budget.trials else SearchSpace(())
    _check_extremes(overrides, budget, parsed)
    trials: list[TrialRecord] = []
    best: list[str] = []
    best_value = None
    edges: list[str] = []
    search_cpu = search_wall = 0.0
    url = None
    if budget.trials:
        folder.mkdir(parents=True, exist_ok=True)
        url = storage or f"sqlite:///{folder / 'study.db'}"
        job = _Job(
            study_name or name, list(overrides), parsed.to_dict(), budget, url, seed, prune, heartbeat, str(folder)
        )
        _claim_study(job)
        _optimize(job, workers)
        study = _load_study(job)
        counted = _counted_trials(study, budget.trials, freeze=not search_only)
        trials = _records(study, counted)
        complete = [t for t in trials if t.counted and t.state == "COMPLETE" and t.value is not None]
        if not complete:
            raise UserError(f"search {name}: no trial of the budget completed{_first_error(study)}; see {folder}")
        chosen = max(complete, key=lambda t: t.value if t.value is not None else -1.0)
        best, best_value, edges = parsed.overrides(chosen.params), chosen.value, parsed.edges(chosen.params)
        search_cpu = sum(t.cpu_seconds for t in trials)
        search_wall = sum(t.wall_seconds for t in trials)
    if edges:
        LOGGER.warning(
            "search %s chose %s at an edge of its range: widen the range and search again", name, ", ".join(edges)
        )
    result = SearchResult(
        name=name,
        folder=folder,
        budget=budget,
        space=parsed.to_dict(),
        best_overrides=best,
        best_value=best_value,
        edges=edges,
        final=None,
        storage=url,
        study_name=(study_name or name) if url else None,
        trials=trials,
        search_cpu_seconds=search_cpu,
        search_wall_seconds=search_wall,
        command=command,
    )
    return result if search_only else _run_final(result, overrides)


def _run_final(result: SearchResult, overrides: Sequence[str]) -> SearchResult:
    """Train and test the chosen setting of ``result`` (its ``final_seeds`` seeds); ``result`` with
    the final runs' folder and time."""
    from ..protocol.runner import run_experiment
    from ..spec.compose import load_spec

    args = [*overrides, *result.best_overrides, *_final_overrides(result.name, result.budget, result.folder)]
    start, start_wall = process_cpu_seconds(), time.monotonic()
    final = run_experiment(load_spec(args), command=_run_command(args))
    cpu, wall = _add_final_time(result.folder, process_cpu_seconds() - start, time.monotonic() - start_wall)
    cpu = max(cpu, _trained(final)[1])  # a call killed before it could add its time still counts
    return dataclasses.replace(result, final=final, final_cpu_seconds=cpu, final_wall_seconds=wall)


@dataclass(frozen=True)
class _Job:
    """What every worker of a search needs (plain data, to cross to spawned processes)."""

    name: str
    overrides: list[str]
    space: dict[str, str]
    budget: SearchBudget
    storage: str
    seed: int
    prune: bool
    heartbeat: int
    folder: str


def _base_spec(overrides: Sequence[str], budget: SearchBudget) -> Any:
    from ..spec.compose import load_spec

    return load_spec([*overrides, *budget.run_overrides()])


def _check_extremes(overrides: Sequence[str], budget: SearchBudget, space: SearchSpace) -> None:
    """Compose and check the config at each end of every range (and each choice), so that a space
    the runner cannot run is refused before any trial starts."""
    from optuna.distributions import CategoricalDistribution

    from ..spec.compose import load_spec

    for dimension in space.dimensions:
        d = dimension.distribution
        values = d.choices if isinstance(d, CategoricalDistribution) else (d.low, d.high)
        for value in values:
            try:
                load_spec([*overrides, *budget.run_overrides(), dimension.override(value)])
            except UserError as err:
                raise ConfigError(f"search space {dimension.key}={value}: {err}") from None


def _trial_experiment(settings: Sequence[str]) -> str:
    """A trial's experiment name: ``trial-`` and a digest of its settings, so that a retried trial
    resumes the folder of the one it replaces."""
    return "trial-" + hashlib.sha256("\n".join(sorted(settings)).encode()).hexdigest()[:12]


def _trial_overrides(job: _Job, settings: Sequence[str]) -> list[str]:
    trials_dir = Path(job.folder) / "trials"
    return [
        *job.overrides,
        *job.budget.run_overrides(),
        *settings,
        "test=false",
        "seeds=1",
        f"output_dir={trials_dir}",
        f"experiment={_trial_experiment(settings)}",
    ]


def _final_overrides(name: str, budget: SearchBudget, folder: Path) -> list[str]:
    return [
        *budget.run_overrides(),
        "test=true",
        f"seeds={budget.final_seeds}",
        f"output_dir={folder / 'final'}",
        f"experiment={name}",
    ]


def _run_command(overrides: Sequence[str]) -> str:
    import shlex

    return shlex.join(["pml-bench", "run", *overrides])


def _trained(exp_dir: Path) -> tuple[int, float]:
    """The epochs and the training CPU seconds that the fold checkpoints of the experiment folder
    ``exp_dir`` record over every process that trained them; ``(0, 0.0)`` where they cannot tell
    (no checkpoint yet, or checkpoints saved before CPU time was recorded)."""
    from ..results.trained_epochs import trained_epochs

    if not (exp_dir / "config.yaml").is_file():
        return 0, 0.0
    try:
        runs = trained_epochs(exp_dir)
    except (ValueError, UserError):
        return 0, 0.0
    return sum(r.epochs for r in runs), sum(r.cpu_seconds or 0.0 for r in runs)


def _add_final_time(folder: Path, cpu: float, wall: float) -> tuple[float, float]:
    """Add a call's time on the final runs to ``<folder>/final_time.json`` (a run resumed over
    several calls is timed over all of them); the totals."""
    from ..results.io import write_json

    path = folder / FINAL_TIME
    total = {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
            total = {key: float(found[key]) for key in total}
        except (OSError, ValueError, KeyError, TypeError) as err:
            LOGGER.warning("%s is unreadable (%s): the final runs' earlier time is lost", path, err)
    total = {"cpu_seconds": total["cpu_seconds"] + cpu, "wall_seconds": total["wall_seconds"] + wall}
    write_json(path, total)
    return total["cpu_seconds"], total["wall_seconds"]


def _storage(job: _Job, attempts: int = 5) -> Any:
    """Optuna's storage at ``job.storage``. Workers that start together on an empty database race
    to create Optuna's tables, and all but one find them made under their feet (an integrity or
    programming error of the database): those try again, ``attempts`` times in all."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            return _open_storage(job)
        except (IntegrityError, ProgrammingError) as err:
            if attempt == attempts:
                raise UserError(f"--storage: cannot open {job.storage} ({type(err).__name__}: {err})") from None
            time.sleep(0.5 * attempt)
    raise ValueError(f"attempts must be >= 1, got {attempts}")


def _open_storage(job: _Job) -> Any:
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    kwargs: dict[str, Any] = {}
    if job.storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # the heartbeat is experimental in Optuna 4 and 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                job.storage,
                heartbeat_interval=job.heartbeat,
                grace_period=2 * job.heartbeat,
                heartbeat_stale_trial_callback=_retry(),
                **kwargs,
            )
    except (IntegrityError, ProgrammingError):
        raise
    except Exception as err:  # noqa: BLE001 -- SQLAlchemy and the drivers raise many kinds
        raise UserError(f"--storage: cannot open {job.storage} ({type(err).__name__}: {err})") from None


def _retry() -> Any:
    """What re-queues a trial whose worker died: the same settings, at most twice."""
    import optuna

    with warnings.catch_warnings():  # experimental in Optuna 4 and 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)


def _load_study(job: _Job) -> Any:
    return _open_study(job)[0]


def _open_study(job: _Job) -> tuple[Any, Any]:
    """The study and its storage (created if missing)."""
    import optuna

    # Optuna logs a failed trial's traceback at WARNING; _objective names the error in one line instead.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = _storage(job)
    from .sampler import TrialSeededTPESampler

    sampler = TrialSeededTPESampler(job.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1) if job.prune else None
    study = optuna.create_study(
        storage=storage,
        study_name=job.name,
        sampler=sampler,
        pruner=pruner or optuna.pruners.NopPruner(),
        direction="maximize",
        load_if_exists=True,
    )
    return study, storage


def _optimize(job: _Job, workers: int) -> None:
    """Run trials until the study holds ``budget.trials`` finished ones: here, or in ``workers``
    spawned processes."""
    if workers == 1:
        _work(job)
        return
    context = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
    threads = max(1, len(os.sched_getaffinity(0)) // workers)  # the CPUs shared out, not oversubscribed
    processes = [context.Process(target=_work, args=(job, threads)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise UserError(f"search {job.name}: {len(failed)} of {workers} workers failed (exit codes {failed})")


def _claim_study(job: _Job) -> None:
    """Create the study, or check that the one found was made with the same config, space and
    training budget (a search continued with other settings would mix trials of two searches);
    the number of trials and of final seeds may change (a search extended, more seeds)."""
    study = _load_study(job)
    training = {k: v for k, v in job.budget.to_dict().items() if k not in ("trials", "final_seeds")}
    definition = {"overrides": job.overrides, "space": job.space, "budget": training}
    found = study.user_attrs.get("definition")
    if found is None:
        study.set_user_attr("definition", definition)
    elif found != definition:
        changed = sorted(k for k in definition if definition[k] != found.get(k))
        raise ConfigError(
            f"search {job.name}: its study in {job.storage} was made with another {' and '.join(changed)} "
            f"({found}); give this search another name, or remove that study to start again"
        )


def _work(job: _Job, threads: int | None = None) -> None:
    """One worker: run trials of the study until it holds the budget's finished trials, or as
    many failed ones (trials whose run raised an error; a killed worker's trial is retried)."""
    import optuna

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    study, storage = _open_study(job)
    _fail_dead_local_trials(study, storage, job)
    space = parse_space(job.space)
    budget = job.budget.trials

    def count(*states: Any, failed: bool = False) -> int:
        trials = study.get_trials(deepcopy=False, states=states)
        return sum(1 for t in trials if not failed or "error" in t.user_attrs)

    def spent() -> bool:
        finished = count(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return finished >= budget or count(optuna.trial.TrialState.FAIL, failed=True) >= budget

    def stop_when_spent(study: Any, trial: Any) -> None:
        if spent():
            study.stop()

    if not spent():
        study.optimize(lambda trial: _objective(job, space, trial), callbacks=[stop_when_spent], catch=(UserError,))


def _fail_dead_local_trials(study: Any, storage: Any, job: _Job) -> None:
    """Mark failed (and so retried) the running trials whose worker was a process of this host
    that no longer exists: a search killed here and started again retries them at once, without
    waiting for their heartbeat to lapse."""
    import optuna

    from ..protocol.lock import pid_alive

    study_id = storage.get_study_id_from_name(job.name)
    host = socket.gethostname()
    retry = _retry()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
            LOGGER.warning("search %s: trial %d's process died; the trial is retried", job.name, trial.number)
            retry(study, storage.get_trial(trial_id))


def _objective(job: _Job, space: SearchSpace, trial: Any) -> float:
    """Run one trial: the settings ``trial`` suggests, trained on the validation folds; its
    validation MAP@R. Pruned when the pruner says so after a validated epoch."""
    import optuna

    from ..protocol.runner import run_experiment
    from ..results.folder import ExperimentFolder
    from ..results.metric_names import PRIMARY_METRIC
    from ..spec.compose import load_spec

    settings = space.suggest(trial)
    overrides = _trial_overrides(job, settings)
    spec = load_spec(overrides)
    trial.set_user_attr("experiment", str(spec.folder))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    epochs = [0]
    start_cpu, start_wall = process_cpu_seconds(), time.monotonic()

    def report(seed: int, fold: int, epoch: int, score: float) -> None:
        epochs[0] += 1
        trial.report(score, fold * job.budget.epochs + epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold} epoch {epoch}: validation MAP@R {score:.4f}")

    try:
        run_experiment(spec, command=_run_command(overrides), on_validation=report)
    except UserError as err:
        trial.set_user_attr("error", str(err))
        LOGGER.warning("search %s: trial %d failed: %s", job.name, trial.number, err)
        raise
    finally:
        # A retried trial resumes the folds of the one a killed worker left: its checkpoints count
        # the epochs and CPU time of that worker too.
        trained_epochs, trained_cpu = _trained(spec.folder)
        trial.set_user_attr("epochs", max(epochs[0], trained_epochs))
        trial.set_user_attr("cpu_seconds", max(process_cpu_seconds() - start_cpu, trained_cpu))
        trial.set_user_attr("wall_seconds", time.monotonic() - start_wall)
    records = ExperimentFolder(spec.folder).records()
    values = [r["metrics"][PRIMARY_METRIC] for r in records if r["split"] == "val"]
    if not values:
        raise UserError(f"{spec.folder} recorded no validation MAP@R")
    return float(sum(values) / len(values))


def _counted_trials(study: Any, budget: int, freeze: bool) -> list[int]:
    """The numbers of the trials the budget counts: the first ``budget`` to finish, by number. The
    first call that chooses (``freeze``) keeps them in the study, so that a trial of another worker
    that finishes later, with a lower number, changes neither the count nor the choice (until the
    budget changes)."""
    kept = study.user_attrs.get(COUNTED)
    if kept is not None and len(kept) == budget:
        return [int(n) for n in kept]
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counted = [t.number for t in trials if t.state.name in FINISHED][:budget]
    if freeze and len(counted) == budget:
        study.set_user_attr(COUNTED, counted)
    return counted


def _first_error(study: Any) -> str:
    """`` (trial <n> of <failed> failed: <error>)`` for the first trial that failed with an error, or ``""``."""
    failed = [t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
    if not failed:
        return ""
    first = min(failed, key=lambda t: t.number)
    return f" (trial {first.number} of {len(failed)} failed: {first.user_attrs['error']})"


def _records(study: Any, counted: Sequence[int]) -> list[TrialRecord]:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    records = []
    for t in trials:
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=value,
                params=dict(t.params),
                epochs=int(t.user_attrs.get("epochs", 0)),
                cpu_seconds=float(t.user_attrs.get("cpu_seconds", 0.0)),
                wall_seconds=float(t.user_attrs.get("wall_seconds", 0.0)),
                counted=t.number in counted,
                folder=t.user_attrs.get("experiment"),
            )
        )
    return records
