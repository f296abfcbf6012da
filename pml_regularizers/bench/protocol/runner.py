"""Runs one benchmark experiment: seeds x folds, train with a PML trainer, select, test, record.

Protocol ("A Metric Learning Reality Check", Musgrave et al. 2020): classes are sorted and the second
half is the test set. The first half trains, either whole (``cv_folds=0``) or in class-disjoint
folds, each keeping the epoch with the best validation MAP@R. With folds, test metrics are reported
for each fold's embedding ("separated", averaged over folds) and for the folds' L2-normalised
embeddings concatenated ("concatenated").

``test_split: none`` trains on every class instead, for the model to deploy once the
hyperparameters are chosen: nothing is held out and nothing is tested. With ``cv_folds=0`` a seed
has one fold, whose last epoch's checkpoint holds the models, and no record; with folds, each seed
records the validation MAP@R over folds of every class. ``pml-bench embed`` embeds any data set with
the models (:mod:`~pml_regularizers.bench.protocol.embedding`).

Everything is resumable: each fold writes an atomic checkpoint after every epoch (keeping the one
before it as a backup) and each seed its result. Running the same command again skips finished work
and continues an interrupted fold from its last epoch, or from the epoch before when the last
checkpoint is damaged. The data order of epoch ``e`` depends only on (seed, fold, e), so a resumed
run follows the same path as an uninterrupted one.

Nothing is written before the run has been checked: the device, the output folder, the data set, the
split (every training fold has at least one batch an epoch, the test set and every validation fold
at least 2 classes with 2 or more images) and the models. The experiment folder is then locked
(:class:`~pml_regularizers.bench.protocol.lock.ExperimentLock`) for as long as the run lasts.

This module runs the seeds and writes the results; the folder's layout is
:mod:`~pml_regularizers.bench.results.folder`'s, and the rest has a module each: the data
(``experiment_data``), the device (``devices``), torchrun (``distributed``), what a config builds
(``build``), how the trunk and loaders run (``run_settings``), seeding (``seeding``), a fold's
checkpoints (``fold_checkpoints``) and its training (``training``).
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.serve import DataSet, load_data, torch_dataset
from ..errors import UserError
from ..models.build import build_parts
from ..results.folder import ExperimentFolder, Results, make_record
from ..results.io import atomic_torch_save
from ..results.metric_names import PRIMARY_METRIC
from ..spec.run_spec import RunSpec
from .devices import device_label, resolve_device
from .fold import FoldJob, ValidationCallback, embed, train_fold
from .fold_checkpoints import check_trained
from .lock import ExperimentLock
from .metrics import BenchAccuracyCalculator
from .preflight import check_input, check_output_dir, check_retrieval_sets, check_training_folds, split_classes
from .progress import RunProgress
from .torchrun import Dist, init_distributed

__all__ = ["run_experiment"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Run:
    """What every seed of a run shares."""

    spec: RunSpec
    data: DataSet
    folds: list[tuple[list[int], list[int]]]
    test_classes: list[int]
    folder: ExperimentFolder
    device: torch.device
    ddp: Dist
    evaluate_only: bool
    command: str | None
    progress: RunProgress
    on_validation: ValidationCallback | None

    def results(self, records: list[dict]) -> Results:
        """``records`` as this run writes them, with what ran them."""
        return Results(
            self.spec.experiment,
            records,
            config=self.spec.config,
            command=self.command,
            world_size=self.ddp.world,
            device=device_label(self.device),
        )


def run_experiment(
    spec: RunSpec,
    evaluate_only: bool = False,
    command: str | None = None,
    on_validation: ValidationCallback | None = None,
) -> Path:
    """Run (or resume, or re-evaluate) the experiment ``spec`` describes.

    Started by ``torchrun --nproc_per_node=N``, the run is data-parallel: each process trains on
    its share of every batch (``batch_size`` is the global batch), models are wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, and the loss and miner in PML's
    ``DistributedLossWrapper`` / ``DistributedMinerWrapper``, which gather the embeddings of all
    processes. Rank 0 validates, writes checkpoints, logs and results, and holds the lock on the
    experiment folder.

    Parameters
    ----------
    spec : RunSpec
        The checked experiment (:func:`pml_regularizers.bench.spec.compose.load_spec`).
    evaluate_only : bool
        Re-test the saved models of every seed and fold without training; fails, before writing
        anything, if a fold has no finished checkpoint.
    command : str, optional
        The command that reproduces this experiment (e.g. ``pml-bench run loss=arcface``), kept in
        ``results.json`` so that reports can show it, and named to a second run that finds the
        folder in use (default: this process's command line).
    on_validation : callable, optional
        ``on_validation(seed, fold, epoch, score)`` after each validated epoch, once its
        checkpoints are saved (``score``: the fold's validation MAP@R). An exception it raises
        stops the run there, and reaches the caller (a search's pruner stops a trial so); the
        experiment folder is left resumable, as after any interruption.

    Returns
    -------
    Path
        The experiment folder (:class:`~pml_regularizers.bench.results.folder.ExperimentFolder`),
        holding ``config.yaml``, ``results.json`` (with the device that finished the experiment,
        :func:`~pml_regularizers.bench.protocol.runner.device_label`) and one ``seed_<s>`` folder per seed
        (its results, record-keeper logs, checkpoints, test embeddings).

    Raises
    ------
    UserError
        Before anything is written, for a run that cannot go as configured (a
        :class:`~pml_regularizers.bench.errors.ConfigError` for the config itself: the device,
        the output folder, a split whose metrics would mean nothing or an epoch without a batch);
        for a data set that cannot be read; for a folder that holds a different experiment or is
        in use by another process; for evaluating an experiment that has not finished training;
        and for a checkpoint that cannot be used (the message names the file).
    """
    ddp = init_distributed(spec.protocol.batch_size, spec.runtime.device)
    folder = ExperimentFolder(spec.folder)
    if not evaluate_only and folder.is_finished(spec):
        LOGGER.info("%s is finished; not recomputed", folder.path)
        return folder.path
    device = resolve_device(spec.runtime.device, ddp)
    check_output_dir(folder.path)
    check_input(spec.data, spec.models.trunk)
    if evaluate_only and not folder.config_path.is_file():
        raise UserError(
            f"nothing to evaluate: {folder.path} holds no experiment (no config.yaml); "
            "train it first with pml-bench run and the same overrides"
        )
    data = load_data(spec.data)
    train_classes, test_classes, folds = split_classes(spec.protocol, data.labels)
    check_retrieval_sets(spec.protocol, data.labels, test_classes, folds)
    check_training_folds(spec.protocol.batch_size, spec.models.sampler, data.labels, folds, ddp.world)
    build_parts(spec.models, data, num_classes=len(train_classes), device=torch.device("cpu"))  # config check
    lock = ExperimentLock(folder.path, command or shlex.join(sys.argv))
    progress = RunProgress(spec.protocol.seed_range, len(folds), spec.protocol.epochs)
    run = _Run(spec, data, folds, test_classes, folder, device, ddp, evaluate_only, command, progress, on_validation)
    try:
        ddp.on_main(lambda: _open_experiment(folder, spec, lock, evaluate_only))
        if evaluate_only:
            ddp.on_main(lambda: check_trained(folder, spec, len(folds)))
        elif ddp.main:
            progress.began(spec.experiment, folder.path)
        records: list[dict] = []
        for seed in spec.protocol.seed_range:
            records += _run_seed(run, seed)
        if ddp.main:
            folder.write_results(run.results(records))
        ddp.barrier()
    finally:
        lock.release()
    return folder.path


def _run_seed(run: _Run, seed: int) -> list[dict]:
    """Train (or load) and test every fold of one seed; its records, also kept in its folder."""
    spec, folder = run.spec, run.folder
    finished = None if run.evaluate_only else folder.seed_results(seed)
    if finished is not None:
        return finished.records
    tested = spec.protocol.tests_held_out_classes
    test_set = torch_dataset(run.data.subset(run.test_classes), spec.data, train=False) if tested else None
    calc = BenchAccuracyCalculator()
    embeddings, labels, val_scores = [], None, []
    for fold, (tr, va) in enumerate(run.folds):
        val_set = torch_dataset(run.data.subset(va), spec.data, train=False) if va else None
        job = FoldJob(
            spec,
            run.data,
            run.data.subset(tr),
            val_set,
            folder.fold(seed, fold),
            run.device,
            run.ddp,
            run.progress,
            run.on_validation,
        )
        models, best_score = train_fold(job)
        val_scores.append(best_score)
        if test_set is not None and run.ddp.main:
            emb, labels = embed(models, test_set, spec.runtime, run.device)
            embeddings.append(emb)
    records = []
    final = torch.cat(embeddings, 1) if embeddings else None
    if spec.protocol.validated:
        records.append(make_record(seed, "val", "separated", {PRIMARY_METRIC: float(np.mean(val_scores))}))
    if len(embeddings) == 1:
        records.append(make_record(seed, "test", "single", calc.get_accuracy(embeddings[0], labels)))
    elif embeddings:
        per_fold = [calc.get_accuracy(e, labels) for e in embeddings]
        separated = {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}
        records.append(make_record(seed, "test", "separated", separated))
        records.append(make_record(seed, "test", "concatenated", calc.get_accuracy(final, labels)))
    if run.ddp.main:
        if final is not None and spec.runtime.save_test_embeddings:
            atomic_torch_save({"embeddings": final, "labels": labels}, folder.test_embeddings_path(seed))
        folder.write_seed_results(seed, run.results(records))
    run.ddp.barrier()
    return records


def _open_experiment(folder: ExperimentFolder, spec: RunSpec, lock: ExperimentLock, evaluate_only: bool) -> None:
    """Lock the folder (creating it), then claim it for ``spec``
    (:meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.claim`)."""
    lock.acquire()
    folder.claim(spec, evaluate_only)
