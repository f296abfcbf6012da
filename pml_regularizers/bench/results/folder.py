"""The experiment folder of a benchmark run: its layout, and reading and writing what it holds.

:class:`ExperimentFolder` is the one place that knows the layout. The runner writes through it, and
the reports and the experiment scripts read through it::

    <output_dir>/<experiment>/
        config.yaml                         the config the experiment runs with
        results.json                        its results (Results), once every seed has finished
        seed_<s>/result.json                one seed's results, in the same format
        seed_<s>/test_embeddings.pt         the seed's test embeddings, {"embeddings", "labels"}
        seed_<s>/fold_<f>/checkpoint_latest.pt   the fold's last epoch (checkpoint_latest.backup.pt:
                                                 the epoch before it)
        seed_<s>/fold_<f>/checkpoint_best.pt     its best validation epoch (with cross-validation)
        seed_<s>/fold_<f>/logs/             record-keeper's CSVs (loss_histories.csv, ...)
        seed_<s>/fold_<f>/center_geometry.json   the class centers' geometry after each epoch
        seed_<s>/fold_<f>/tensorboard/      record-keeper's TensorBoard events

A run without cross-validation trains one fold a seed, ``fold_0``. The checkpoints' contents are
described in :mod:`pml_regularizers.bench.results.checkpoints`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from ..errors import ConfigError, UserError
from ..spec.run_spec import RunSpec, complete_saved_config
from .checkpoints import CheckpointOwner, load_checkpoint, read_checkpoint
from .io import atomic_write, read_torch_file, write_json

__all__ = [
    "BEST_CHECKPOINT",
    "LATEST_CHECKPOINT",
    "RECORD_KEYS",
    "ExperimentFolder",
    "FoldFolder",
    "Results",
    "make_record",
]

LOGGER = logging.getLogger(__name__)
LATEST_CHECKPOINT, BEST_CHECKPOINT = "checkpoint_latest.pt", "checkpoint_best.pt"
RECORD_KEYS = ("seed", "split", "embedding", "metrics")
_SEED_DIR = re.compile(r"^seed_(\d+)$")
_FOLD_DIR = re.compile(r"^fold_(\d+)$")


def make_record(seed: int, split: str, embedding: str, metrics: dict) -> dict:
    """One record of :class:`Results`: the metrics of one seed on one split (``"test"`` or
    ``"val"``) for one embedding (``"single"``, ``"separated"`` or ``"concatenated"``), as floats."""
    return {
        "seed": seed,
        "split": split,
        "embedding": embedding,
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


@dataclass(frozen=True)
class Results:
    """What ``results.json`` holds, and each ``seed_<s>/result.json`` for its seed alone.

    The files hold :meth:`to_json`; :meth:`read` reads them back, and also the seed results written
    before they shared this format.

    Attributes
    ----------
    experiment : str
        The experiment's name: the config's ``experiment``, or the name
        :func:`~pml_regularizers.bench.spec.compose.experiment_name` makes from its choices.
    records : list of dict
        The records (:func:`make_record`), each with the keys :data:`RECORD_KEYS`.
    config : dict or None
        The config the experiment ran with.
    command : str or None
        The command that ran it (e.g. ``pml-bench run loss=arcface``).
    world_size : int or None
        The number of processes that ran it.
    device : str or None
        What ran it (:func:`~pml_regularizers.bench.protocol.runner.device_label`); None in files written
        before the runner recorded it.
    """

    experiment: str
    records: list[dict]
    config: dict | None = None
    command: str | None = None
    world_size: int | None = None
    device: str | None = None

    def to_json(self) -> dict:
        """The JSON object the files hold."""
        return {
            "experiment": self.experiment,
            "config": self.config,
            "command": self.command,
            "world_size": self.world_size,
            "device": self.device,
            "records": self.records,
        }

    def named_records(self) -> list[dict]:
        """The records with the key ``"experiment"`` added, as
        :func:`~pml_regularizers.bench.results.report.summarize` takes them."""
        return [{**record, "experiment": self.experiment} for record in self.records]

    @classmethod
    def read(cls, path: Path, default_experiment: str | None = None) -> Results:
        """Read and check the results file ``path``.

        Parameters
        ----------
        path : Path
            A ``results.json`` or ``seed_<s>/result.json``.
        default_experiment : str, optional
            The name to use when the file names none, as seed results written before they shared
            this format (``{"seed", "records"}``) do.

        Raises
        ------
        ValueError
            When the file is not valid JSON or lacks the expected structure; the message names it.
        """
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if isinstance(data, dict) and default_experiment is not None:
            data = {"experiment": default_experiment, **data}
        if not isinstance(data, dict) or not isinstance(data.get("experiment"), str):
            raise ValueError(f"{path} must be a JSON object with a string 'experiment'")
        records = data.get("records")
        if not isinstance(records, list):
            raise ValueError(f"{path} must have a list 'records'")
        for i, record in enumerate(records):
            if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
                raise ValueError(f"{path}: record {i} must be an object with keys {list(RECORD_KEYS)}")
            if not isinstance(record["metrics"], dict):
                raise ValueError(f"{path}: record {i} has 'metrics' that is not an object")
        command = data.get("command")
        if command is not None and not isinstance(command, str):
            raise ValueError(f"{path}: 'command' must be a string or null")
        return cls(data["experiment"], records, data.get("config"), command, data.get("world_size"), data.get("device"))


@dataclass(frozen=True)
class FoldFolder:
    """The folder of one training run: fold ``fold`` of seed ``seed`` (``fold_0`` without
    cross-validation).

    Parameters
    ----------
    path : Path
        ``<experiment>/seed_<seed>/fold_<fold>``.
    seed, fold : int
        Which run it holds.
    """

    path: Path
    seed: int
    fold: int

    @property
    def latest(self) -> Path:
        """The checkpoint of the last finished epoch, which a run resumes from."""
        return self.path / LATEST_CHECKPOINT

    @property
    def best(self) -> Path:
        """The checkpoint of the best validation epoch (runs with cross-validation only)."""
        return self.path / BEST_CHECKPOINT

    @property
    def logs(self) -> Path:
        """record-keeper's CSV folder."""
        return self.path / "logs"

    @property
    def tensorboard(self) -> Path:
        """record-keeper's TensorBoard folder."""
        return self.path / "tensorboard"

    @property
    def center_geometry(self) -> Path:
        """The class centers' geometry after each epoch, for losses with class centers
        (:mod:`~pml_regularizers.bench.results.center_geometry`)."""
        return self.path / "center_geometry.json"

    def tests_best(self, validated: bool) -> bool:
        """Whether the runner tests the best validation epoch's models (those of
        :attr:`best`) rather than the last epoch's: with validation, once a best epoch is saved."""
        return validated and self.best.exists()

    def tested_checkpoint(self, validated: bool, owner: CheckpointOwner | None = None) -> Path | None:
        """The checkpoint whose models the runner tested, or None before the fold has finished.

        Parameters
        ----------
        validated : bool
            Whether the fold was validated (the experiment has cross-validation folds).
        owner : CheckpointOwner, optional
            Whose checkpoint it must be; one of another owner counts as unusable.

        Returns
        -------
        Path or None
            :attr:`best` when :meth:`tests_best`, else the last epoch's checkpoint (:attr:`latest`,
            or its backup when the runner would resume from that); None when the latest checkpoint
            is missing or says that training goes on.

        Raises
        ------
        UserError
            When neither :attr:`latest` nor its backup can be read (or is ``owner``'s).
        """
        loaded = load_checkpoint(self.latest, lambda payload: None, owner=owner)
        if loaded is None or not loaded.payload["state"]["done"]:
            return None
        return self.best if self.tests_best(validated) else loaded.path


class ExperimentFolder:
    """The folder of one benchmark experiment (the layout is in this module's description).

    Parameters
    ----------
    path : str or os.PathLike
        The folder, ``<output_dir>/<experiment name>``; it need not exist yet.

    Attributes
    ----------
    config_path, results_path : Path
        Its ``config.yaml`` and ``results.json``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.results_path = self.path / "results.json"

    def __repr__(self) -> str:
        return f"ExperimentFolder({str(self.path)!r})"

    # Layout --------------------------------------------------------------------------------------

    def seed_dir(self, seed: int) -> Path:
        """The folder of seed ``seed``."""
        return self.path / f"seed_{seed}"

    def seed_results_path(self, seed: int) -> Path:
        """Where seed ``seed``'s :class:`Results` are kept."""
        return self.seed_dir(seed) / "result.json"

    def test_embeddings_path(self, seed: int) -> Path:
        """Where seed ``seed``'s test embeddings are kept."""
        return self.seed_dir(seed) / "test_embeddings.pt"

    def fold(self, seed: int, fold: int) -> FoldFolder:
        """The folder of fold ``fold`` of seed ``seed``."""
        return FoldFolder(self.seed_dir(seed) / f"fold_{fold}", seed, fold)

    def seeds(self) -> list[int]:
        """The seeds that have a folder, in increasing order (none when the folder is missing)."""
        if not self.path.is_dir():
            return []
        found = (_SEED_DIR.match(child.name) for child in self.path.iterdir() if child.is_dir())
        return sorted(int(match.group(1)) for match in found if match)

    def folds(self) -> list[FoldFolder]:
        """The fold folders of every seed, by seed then fold."""
        return [fold for seed in self.seeds() for fold in self.folds_of(seed)]

    def folds_of(self, seed: int) -> list[FoldFolder]:
        """The fold folders of seed ``seed``, by fold (none when the seed has no folder)."""
        seed_dir = self.seed_dir(seed)
        if not seed_dir.is_dir():
            return []
        found = (_FOLD_DIR.match(child.name) for child in seed_dir.iterdir() if child.is_dir())
        return [self.fold(seed, fold) for fold in sorted(int(match.group(1)) for match in found if match)]

    # The config ----------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The saved ``config.yaml`` as plain containers, completed with what was implicit when it
        was saved (:func:`~pml_regularizers.bench.spec.run_spec.complete_saved_config`).

        Raises
        ------
        FileNotFoundError
            When the folder holds none.
        """
        if not self.config_path.is_file():
            raise FileNotFoundError(f"no config.yaml in experiment folder {self.path}: expected {self.config_path}")
        return complete_saved_config(cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(self.config_path))))

    def spec(self) -> RunSpec:
        """The experiment's spec, from its saved config (:meth:`config`).

        Raises
        ------
        FileNotFoundError
            When the folder holds no ``config.yaml``.
        ConfigError
            When it is not a config the runner can read.
        """
        return RunSpec.from_config(self.config())

    def holds_config(self, spec: RunSpec) -> bool:
        """Whether ``config.yaml`` is that of ``spec``: the same text, or a config saved before some
        keys existed that holds the same values once they are set to what it ran with
        (:meth:`config`)."""
        if not self.config_path.is_file():
            return False
        if self.config_path.read_text() == spec.to_yaml():
            return True
        return self.config() == complete_saved_config(spec.config)

    def is_finished(self, spec: RunSpec) -> bool:
        """Whether the folder holds the results of this very experiment (:meth:`holds_config`)."""
        return self.results_path.exists() and self.holds_config(spec)

    def has_finished_work(self) -> bool:
        """Whether the folder holds results or a checkpoint that can be read."""
        if self.results_path.exists() or any(self.path.glob("seed_*/result.json")):
            return True
        for path in self.path.glob("seed_*/fold_*/checkpoint_*.pt"):
            try:
                read_checkpoint(path)
            except UserError:
                continue
            return True
        return False

    def claim(self, spec: RunSpec, evaluate_only: bool) -> None:
        """Write ``config.yaml``, or check the one there.

        A ``config.yaml`` of the same experiment (:meth:`holds_config`) is kept as it is. A folder
        of a different config is refused when it holds finished work; one without
        (:meth:`has_finished_work`) is what a failed start left behind: ``evaluate`` finds nothing
        to evaluate there, and ``run`` takes it over (its ``seed_*`` folders are removed and its
        config replaced).

        Raises
        ------
        ConfigError
            For a folder of a different config with finished work.
        UserError
            For evaluating a folder of a different config.
        """
        if self.holds_config(spec):
            return
        if self.config_path.exists():
            diff = ", ".join(sorted(_diff_keys(self.config(), complete_saved_config(spec.config))))
            if self.has_finished_work():
                raise ConfigError(
                    f"{self.path} holds a run of a different config (differs at: {diff}); "
                    "choose another experiment= or output_dir="
                )
            if evaluate_only:
                raise UserError(
                    f"nothing to evaluate: {self.path} holds no finished epoch (a failed start of a "
                    f"different config, differing at: {diff}); train it first with pml-bench run"
                )
            LOGGER.warning(
                "taking over %s: its config.yaml differs at: %s, but it holds no finished epoch", self.path, diff
            )
            for seed_dir in self.path.glob("seed_*"):
                shutil.rmtree(seed_dir)
        atomic_write(self.config_path, lambda f: f.write(spec.to_yaml().encode()))

    # Results -------------------------------------------------------------------------------------

    def results(self) -> Results:
        """The experiment's :class:`Results`, from ``results.json``.

        Raises
        ------
        FileNotFoundError
            When ``results.json`` is missing.
        ValueError
            When it is not valid JSON or lacks the expected structure; the message names the file.
        """
        if not self.results_path.is_file():
            raise FileNotFoundError(f"no results.json in experiment folder {self.path}: expected {self.results_path}")
        return Results.read(self.results_path)

    def records(self) -> list[dict]:
        """The experiment's records with its name added (:meth:`Results.named_records`); raises
        as :meth:`results` does."""
        return self.results().named_records()

    def command(self) -> str | None:
        """The command ``results.json`` records (the ``pml-bench run`` that made it), if any."""
        return self.results().command

    def device(self) -> str | None:
        """What ran the experiment, as ``results.json`` records it; None when it records nothing."""
        return self.results().device

    def name(self) -> str:
        """The experiment's name as ``results.json`` records it, or the folder's name when there is
        no readable one."""
        try:
            return self.results().experiment
        except (OSError, ValueError):
            return self.path.name

    def write_results(self, results: Results) -> None:
        """Write ``results.json`` (atomically)."""
        write_json(self.results_path, results.to_json())

    def seed_results(self, seed: int) -> Results | None:
        """Seed ``seed``'s :class:`Results`, or None before the seed has finished; seed results
        that name no experiment (those written before they shared the format of ``results.json``)
        get the folder's name."""
        path = self.seed_results_path(seed)
        if not path.exists():
            return None
        return Results.read(path, default_experiment=self.path.name)

    def write_seed_results(self, seed: int, results: Results) -> None:
        """Write seed ``seed``'s :class:`Results` (atomically)."""
        write_json(self.seed_results_path(seed), results.to_json())

    # What the runs left ----------------------------------------------------------------------------

    def test_embeddings(self, seed: int) -> dict | None:
        """Seed ``seed``'s test embeddings, ``{"embeddings": Tensor, "labels": Tensor}``, or None
        when they were not saved.

        Raises
        ------
        ValueError
            When the file is damaged, holds objects a weights-only load refuses, or holds
            something else (:func:`~pml_regularizers.bench.results.io.read_torch_file`).
        """
        path = self.test_embeddings_path(seed)
        if not path.is_file():
            return None
        data = read_torch_file(path, "embeddings file")
        if not isinstance(data, dict) or not {"embeddings", "labels"} <= set(data):
            raise ValueError(f"{path} must hold a dict with 'embeddings' and 'labels'")
        return data

    def first_test_embeddings(self) -> tuple[int, dict] | None:
        """The lowest seed with saved test embeddings, and those embeddings (:meth:`test_embeddings`);
        None when no seed has any."""
        for seed in self.seeds():
            data = self.test_embeddings(seed)
            if data is not None:
                return seed, data
        return None

    def loss_history_files(self, log_file: str = "loss_histories.csv") -> list[Path]:
        """The ``loss_histories.csv`` (or another record-keeper CSV) of every training run, by seed
        then fold.

        A run logs either to ``seed_<s>/logs/`` or, with one training per fold, to
        ``seed_<s>/fold_<f>/logs/``; both places are searched.

        Parameters
        ----------
        log_file : str
            File name in each ``logs/`` folder; a glob pattern is allowed (the first match in
            sorted order is taken), e.g. ``"*_JacobianDeterminantRegularizer.csv"`` for a
            regularizer's stats.

        Returns
        -------
        list of pathlib.Path
            Existing CSV files; empty when there is none.
        """
        found = []
        for seed in self.seeds():
            logs = [self.seed_dir(seed) / "logs", *(fold.logs for fold in self.folds_of(seed))]
            found += [next(iter(sorted(d.glob(log_file))), None) for d in logs]
        return [path for path in found if path is not None and path.is_file()]

    def checkpoint_owner(self, fold: FoldFolder) -> CheckpointOwner:
        """Whose checkpoints ``fold`` must hold: that fold of that seed of this experiment."""
        return CheckpointOwner.of(self.spec(), fold.seed, fold.fold)

    def tested_checkpoint(self, fold: FoldFolder) -> Path | None:
        """:meth:`FoldFolder.tested_checkpoint` of ``fold``, validated when the experiment has
        cross-validation folds, of :meth:`checkpoint_owner`."""
        spec = self.spec()
        return fold.tested_checkpoint(spec.protocol.validated, CheckpointOwner.of(spec, fold.seed, fold.fold))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
