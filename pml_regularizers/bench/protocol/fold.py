"""The training of one fold of a benchmark run with a PML trainer (:func:`train_fold`), and the
embedding of a dataset with the models it leaves (:func:`embed`).

A fold trains from scratch, or from its latest checkpoint, one epoch at a time: each epoch draws
from RNGs reseeded from (seed, fold, epoch, rank) (:func:`~pml_regularizers.bench.protocol.seeding.reseed`),
is validated (with a validation set, on rank 0) and ends with a checkpoint, so that a resumed fold
follows the path of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hydra.utils import get_object
from pytorch_metric_learning import testers
from pytorch_metric_learning.utils import logging_presets
from torch import distributed as dist

from ..data import NaturalImageDataset
from ..data.loader import evaluation_loader, num_workers, training_loader
from ..data.serve import DataSet, torch_dataset
from ..models.build import Optimization, Parts, build_optimization, build_parts
from ..models.precision import trunk_runner, uses_channels_last
from ..results.center_geometry import append_geometry, class_centers
from ..results.checkpoints import CheckpointOwner
from ..results.folder import FoldFolder
from ..results.metric_names import PRIMARY_METRIC
from ..spec.run_spec import RunSpec, RuntimeSpec
from .cpu_time import process_cpu_seconds
from .fold_checkpoints import load_fold_checkpoint, save_fold_checkpoint
from .metrics import BenchAccuracyCalculator
from .preflight import training_sampler
from .progress import RunProgress
from .seeding import reseed
from .torchrun import Dist, distribute
from .trainer import bench_trainer_class

__all__ = ["FoldJob", "ValidationCallback", "embed", "train_fold"]

# What a run calls after each validated epoch: (seed, fold, epoch, validation MAP@R).
ValidationCallback = Callable[[int, int, int, float], None]


@dataclass(frozen=True)
class FoldJob:
    """One fold of one seed to train, or to load once trained: what :func:`train_fold` reads,
    passed as one object.

    Attributes
    ----------
    spec : RunSpec
        The experiment.
    data : ImageSet, FeatureSet or FileSet
        The whole data set (its kind decides the trunk's input).
    train_subset : ImageSet, FeatureSet or FileSet
        The fold's training classes.
    val_set : torch.utils.data.Dataset or None
        The fold's validation classes; None without cross-validation.
    folder : FoldFolder
        Where its checkpoints and logs go; it names the seed and the fold.
    device : torch.device
        Where it trains.
    ddp : Dist
        This process's place in the torchrun job.
    progress : RunProgress, optional
        Where the run's epoch lines go (:mod:`~pml_regularizers.bench.protocol.progress`).
    on_validation : callable, optional
        Called as ``on_validation(seed, fold, epoch, score)`` after each validated epoch, once its
        checkpoints are saved; what it raises stops the fold there
        (:func:`~pml_regularizers.bench.protocol.runner.run_experiment`).
    """

    spec: RunSpec
    data: DataSet
    train_subset: DataSet
    val_set: torch.utils.data.Dataset | None
    folder: FoldFolder
    device: torch.device
    ddp: Dist
    progress: RunProgress | None = None
    on_validation: ValidationCallback | None = None

    @property
    def owner(self) -> CheckpointOwner:
        """Whose checkpoints the fold writes and reads back: this fold of this seed of the experiment."""
        return CheckpointOwner.of(self.spec, self.folder.seed, self.folder.fold)


def train_fold(job: FoldJob) -> tuple[dict[str, torch.nn.Module], float]:
    """Train one fold from scratch or from its latest checkpoint (nothing when it has finished,
    which is all that ``evaluate`` finds: :func:`~pml_regularizers.bench.protocol.fold_checkpoints.check_trained`).

    Returns the models (the best validation epoch's, when there is a validation set) and the
    best validation MAP@R (nan without validation).
    """
    folder, device = job.folder, job.device
    reseed(folder.seed, folder.fold, 0)
    spec = job.spec
    channels_last = uses_channels_last(spec.runtime, device)
    parts = build_parts(spec.models, job.data, job.train_subset.num_classes, device, channels_last)
    optimization = build_optimization(spec.models, parts, device, spec.runtime.precision)
    owner = job.owner
    state = load_fold_checkpoint(folder.latest, folder, owner, parts, optimization.resumable, device) or {
        "epoch": 0,
        "best_epoch": 0,
        "best_score": -math.inf,
        "done": False,
    }
    if not state["done"]:
        _fit(job, parts, optimization, state)
    job.ddp.barrier()
    if folder.tests_best(job.val_set is not None):
        load_fold_checkpoint(folder.best, folder, owner, parts, None, device, best_epoch=state["best_epoch"])
    score = float(state["best_score"]) if job.val_set is not None else math.nan
    return parts.models, score


def _fit(job: FoldJob, parts: Parts, optimization: Optimization, state: dict) -> None:
    """Train ``parts`` from the epoch after ``state["epoch"]`` until the last epoch or early
    stopping, updating ``state``, saving the checkpoints and logging a progress line after each
    epoch."""
    spec, folder, device, ddp = job.spec, job.folder, job.device, job.ddp
    protocol = spec.protocol
    train_set = torch_dataset(job.train_subset, spec.data, train=True)
    record_keeper = hooks = None
    if ddp.main:
        record_keeper, _, _ = logging_presets.get_record_keeper(str(folder.logs), str(folder.tensorboard))
        if record_keeper is None:
            raise RuntimeError("record-keeper logging needs the tensorboard package")
        hooks = logging_presets.get_hook_container(record_keeper, primary_metric=PRIMARY_METRIC)
    batch_size = protocol.batch_size // ddp.world
    sampler = training_sampler(spec.models.sampler, train_set.labels, batch_size, ddp.world, ddp.rank, folder.seed)
    models, loss_funcs, miner = distribute(parts, ddp, device)
    models["trunk"] = trunk_runner(models["trunk"], spec.runtime, device)
    workers = num_workers(spec.runtime, train_set, ddp.world)
    loader = None
    if isinstance(train_set, NaturalImageDataset):  # one loader, its workers kept between epochs
        pin = device.type == "cuda"
        loader = training_loader(train_set, batch_size, sampler, workers, pin_memory=pin, persistent_workers=True)
    trainer_class = bench_trainer_class(get_object(spec.models.trainer.target))
    trainer = trainer_class(
        **copy.deepcopy(dict(spec.models.trainer.arguments)),  # a trainer may change what it is given
        models=models,
        optimizers=optimization.optimizers,
        batch_size=batch_size,
        loss_funcs=loss_funcs,
        mining_funcs={"tuple_miner": miner} if miner is not None else {},
        dataset=train_set,
        sampler=sampler,
        dataloader_num_workers=workers,
        iterations_per_epoch=protocol.iterations_per_epoch,
        freeze_trunk_batchnorm=spec.models.freeze_trunk_bn,
        data_device=device,
        end_of_iteration_hook=hooks.end_of_iteration_hook if hooks else None,
        loader=loader,
        grad_scaler=optimization.scaler,
    )
    eval_trunk = trunk_runner(parts.models["trunk"], spec.runtime, device)
    tester = None
    if job.val_set is not None and ddp.main:
        assert hooks is not None  # made above on the main process
        tester = testers.GlobalEmbeddingSpaceTester(
            accuracy_calculator=BenchAccuracyCalculator(include=(PRIMARY_METRIC,)),
            end_of_testing_hook=hooks.end_of_testing_hook,
            dataloader_num_workers=num_workers(spec.runtime, job.val_set, 1),
        )
    centers = class_centers(parts.loss_funcs["metric_loss"])
    if centers is not None and ddp.main and state["epoch"] == 0:
        append_geometry(folder.center_geometry, 0, centers)
    started = [0.0]
    # Time spent on this fold, kept in its checkpoints so that a run resumed after a kill adds to
    # what its earlier processes spent (up to their last finished epoch).
    cpu_from, wall_from = process_cpu_seconds(), time.monotonic()
    cpu_before, wall_before = float(state.get("cpu_seconds", 0.0)), float(state.get("wall_seconds", 0.0))

    def before_epoch(epoch: int) -> None:
        started[0] = time.monotonic()
        reseed(folder.seed, folder.fold, epoch, ddp.rank)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)

    def after_epoch(epoch: int, loss: float) -> bool:
        score = None
        if tester is not None:
            acc = tester.test({"val": job.val_set}, epoch, eval_trunk, parts.models["embedder"])
            score = float(acc["val"][f"{PRIMARY_METRIC}_level0"])
            if score > state["best_score"]:
                state.update(best_epoch=epoch, best_score=score)
                save_fold_checkpoint(folder.best, parts, None, state, keep_previous=False, owner=job.owner)
        state["epoch"] = epoch
        state["cpu_seconds"] = cpu_before + process_cpu_seconds() - cpu_from
        state["wall_seconds"] = wall_before + time.monotonic() - wall_from
        stop = protocol.patience is not None and epoch - state["best_epoch"] >= protocol.patience
        state["done"] = stop or epoch == protocol.epochs
        if ddp.world > 1:  # only rank 0 validates: every rank stops when rank 0 does
            shared = [state]
            dist.broadcast_object_list(shared, src=0)
            state.update(shared[0])
        if ddp.main:
            assert record_keeper is not None  # made above on the main process
            record_keeper.save_records()
            if centers is not None:
                append_geometry(folder.center_geometry, epoch, centers)
            save_fold_checkpoint(
                folder.latest, parts, optimization.resumable, state, keep_previous=True, owner=job.owner
            )
            if job.progress is not None:
                best = (state["best_epoch"], state["best_score"]) if score is not None else None
                seconds = time.monotonic() - started[0]
                job.progress.epoch_ended(folder.seed, folder.fold, epoch, loss, seconds, score, best)
            if job.on_validation is not None and score is not None:
                job.on_validation(folder.seed, folder.fold, epoch, score)
        return bool(state["done"])

    try:
        trainer.fit(state["epoch"] + 1, protocol.epochs, before_epoch, after_epoch)
    finally:
        trainer.close()


@torch.no_grad()
def embed(
    models: dict[str, torch.nn.Module],
    dataset: torch.utils.data.Dataset,
    runtime: RuntimeSpec,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The L2-normalised embeddings of ``dataset`` by ``models`` (trunk then embedder, in eval mode,
    with the trunk run as in training: :func:`~pml_regularizers.bench.run_settings.trunk_runner`),
    and its labels, on the CPU."""
    for m in models.values():
        m.eval()
    trunk = trunk_runner(models["trunk"], runtime, device)
    loader = evaluation_loader(dataset, 256, num_workers(runtime, dataset, 1), pin_memory=device.type == "cuda")
    out, labels = [], []
    for x, y in loader:
        out.append(models["embedder"](trunk(x.to(device))).cpu())
        labels.append(y)
    return torch.nn.functional.normalize(torch.cat(out), dim=1), torch.cat(labels)
