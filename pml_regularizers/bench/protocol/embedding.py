"""Embedding a data set with the models an experiment trained: ``pml-bench embed``.

The experiment's saved ``config.yaml`` gives everything but the data: its ``dataset`` group alone is
replaced (:func:`embedding_config`), so a model trained with ``test_split=none`` (or any finished
experiment) can embed another data set, e.g. ``dataset=folder dataset.root=/data/new``. Every image
of that data set is embedded, all classes, with no split, by the models the runner tested for each
fold of one seed (:meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.tested_models`); with
cross-validation folds, the folds' L2-normalised embeddings are concatenated, as the runner's
"concatenated" test embedding is. The retrieval metrics of the embeddings are computed when they
mean something (at least 2 classes with 2 or more images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict

from ..data import FeatureSet
from ..data.serve import DataSet, load_data, torch_dataset
from ..errors import UserError
from ..results.folder import ExperimentFolder, FoldFolder
from ..results.io import atomic_torch_save, check_writable, write_json
from ..spec.compose import load_config
from ..spec.run_spec import Component, RunSpec
from ..spec.targets import target_arguments
from .devices import resolve_device
from .fold import embed
from .metrics import BenchAccuracyCalculator
from .torchrun import Dist
from .trained import trained_models

__all__ = ["Embedded", "check_trunk_input", "embed_data_set", "embedding_config", "metrics_path"]


@dataclass(frozen=True)
class Embedded:
    """What :func:`embed_data_set` wrote.

    Attributes
    ----------
    out : Path
        The embeddings file.
    experiment : str
        The experiment whose models embedded the data.
    seed : int
        The seed whose models embedded it.
    embedding : str
        ``"single"`` (one fold) or ``"concatenated"`` (the folds' embeddings side by side).
    dataset : str
        The data set's config choice (``glyphs``, ``folder``, ...).
    num_images, num_classes : int
        What the data set holds.
    metrics : dict or None
        The retrieval metrics (:class:`~pml_regularizers.bench.protocol.metrics.BenchAccuracyCalculator`),
        None when fewer than 2 classes have 2 or more images.
    metrics_file : Path or None
        Where the metrics were written (:func:`metrics_path`); None without metrics.
    """

    out: Path
    experiment: str
    seed: int
    embedding: str
    dataset: str
    num_images: int
    num_classes: int
    metrics: dict[str, float] | None
    metrics_file: Path | None


def metrics_path(out: Path) -> Path:
    """Where the metrics of the embeddings file ``out`` go: beside it, ``<stem>.metrics.json``."""
    return out.with_name(f"{out.stem}.metrics.json")


def embedding_config(saved: RunSpec, overrides: Sequence[str]) -> RunSpec:
    """An experiment's spec with its ``dataset`` group replaced as ``overrides`` say.

    Parameters
    ----------
    saved : RunSpec
        The experiment's spec (:meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.spec`).
    overrides : sequence of str
        Hydra overrides of the ``dataset`` group only. With ``dataset=NAME`` the group is that
        option composed as ``pml-bench run`` composes it, with the other overrides applied;
        without, the overrides (``dataset.KEY=VALUE``) apply to the experiment's own data set
        config. None: the experiment's own data set.

    Returns
    -------
    RunSpec
        ``saved`` with the new ``dataset`` (and its choice); its other parts are the experiment's.

    Raises
    ------
    UserError
        For an override of another group or key, or one that does not parse.
    ConfigError
        For a data set config the spec refuses (an unknown key, naming the closest, a bad value),
        or a ``dataset=NAME`` composition that
        :func:`~pml_regularizers.bench.spec.compose.load_config` refuses (an unknown option, a
        missing ``dataset.root``).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(f"embed: {err}") from err
    for override, text in zip(parsed, overrides):
        key = override.key_or_group
        if key != "dataset" and not key.startswith("dataset."):
            raise UserError(
                f"embed takes overrides of the dataset group only (dataset=NAME, dataset.KEY=VALUE), got {text!r}: "
                "the other groups are the experiment's own"
            )
        if override.is_delete():
            raise UserError(f"embed cannot delete a key ({text!r}); set it instead")
    if any(o.key_or_group == "dataset" for o in parsed):
        fresh = load_config(overrides)
        return saved.with_dataset(
            str(fresh.choices.dataset), cast(dict[str, Any], OmegaConf.to_container(fresh.dataset))
        )
    edited = OmegaConf.create({"dataset": dict(saved.config["dataset"])})
    for override in parsed:
        with open_dict(edited):
            OmegaConf.update(edited, override.key_or_group, override.value(), merge=False)
    return saved.with_dataset(saved.data.choice, cast(dict[str, Any], OmegaConf.to_container(edited.dataset)))


def check_trunk_input(spec: RunSpec, data: DataSet | None = None) -> None:
    """Refuse a data set that the experiment's trunk cannot take.

    An image trunk (one that takes ``in_channels``) needs images with that many channels, and
    ``image_size`` (conv-4) images of that size; a feature trunk (one the runner gives
    ``in_features``: ``trunk=mlp``) needs feature vectors.

    Parameters
    ----------
    spec : RunSpec
        :func:`embedding_config`'s spec: the experiment's trunk with the new ``dataset``.
    data : ImageSet, FeatureSet or FileSet, optional
        The new data, once read: checked to be of the kind the trunk takes.

    Raises
    ------
    UserError
        Naming the ``dataset`` key that does not fit and the trunk's value it must match.
    """
    trunk, d = spec.models.trunk, spec.data
    channels = trunk.get("in_channels")
    if channels is not None and d.channels != channels:
        raise UserError(
            f"dataset.channels is {d.channels} but the experiment's trunk takes {channels}-channel "
            f"images (trunk.in_channels={channels}); set dataset.channels={channels} (with the pipeline that gives it)"
        )
    size = trunk.get("image_size")
    if size is not None and d.size != size:
        raise UserError(
            f"dataset.size is {d.size} but the experiment's trunk takes {size}x{size} images "
            f"(trunk.image_size={size}); set dataset.size={size}"
        )
    if data is None:
        return
    takes_features = _takes_features(trunk)
    if isinstance(data, FeatureSet) and not takes_features:
        raise UserError(
            f"dataset={d.choice} gives feature vectors but the experiment's trunk (trunk={trunk.choice}) takes images"
        )
    if not isinstance(data, FeatureSet) and takes_features:
        raise UserError(
            f"dataset={d.choice} gives images but the experiment's trunk (trunk={trunk.choice}) takes feature vectors"
        )


def _takes_features(trunk: Component) -> bool:
    """Whether the trunk is one the runner builds with ``in_features`` (from a feature data set);
    a target that does not import counts as an image trunk (building it reports the error)."""
    try:
        accepted = target_arguments(get_object(trunk.target))
    except Exception:  # noqa: BLE001 -- Hydra wraps import errors of any kind
        return False
    return accepted is not None and "in_features" in accepted


def embed_data_set(
    exp_dir: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    device: str = "auto",
) -> Embedded:
    """Embed every image of a data set with the models of a finished experiment.

    Parameters
    ----------
    exp_dir : path
        The experiment folder (``<output_dir>/<experiment>``).
    out : path
        The embeddings file to write (atomically): ``{"embeddings": (N, D) float32,
        "labels": (N,) int64, "class_names": list of str, "experiment": str, "seed": int,
        "folds": list of int, "embedding": "single" or "concatenated"}``, rows in the data set's
        order, ``class_names[label]`` naming each label. ``D`` is the embedding size times the
        number of folds. When there are retrieval metrics they go beside it
        (:func:`metrics_path`), as JSON.
    overrides : sequence of str
        ``dataset`` overrides (:func:`embedding_config`); none embeds the experiment's own data set,
        every class of it.
    seed : int, optional
        Whose models embed; by default the experiment's first seed (``seed_offset``).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (default ``auto``: CUDA when available).

    Returns
    -------
    Embedded
        What was written, with the metrics.

    Raises
    ------
    UserError
        For a folder that holds no experiment, a seed it does not run, a fold of that seed that
        has not finished training, an override outside the ``dataset`` group, a data set that
        cannot be read or that the trunk cannot take (:func:`check_trunk_input`), an ``out`` (or
        its metrics file) that cannot be written (a folder, under a file, in a read-only or
        virtual file system: :func:`~pml_regularizers.bench.results.io.check_writable`), or a device that
        is not usable; all before anything is embedded or written.
    """
    folder, out = ExperimentFolder(exp_dir), Path(out)
    if not folder.config_path.is_file():
        raise UserError(
            f"nothing to embed with: {folder.path} holds no experiment (no config.yaml); "
            "give the folder pml-bench run wrote (<output_dir>/<experiment>)"
        )
    for target in (out, metrics_path(out)):
        try:
            check_writable(target)
        except ValueError as err:
            raise UserError(f"--out: {err}") from None
    saved = folder.spec()
    seeds = saved.protocol.seed_range
    seed = saved.protocol.seed_offset if seed is None else seed
    if seed not in seeds:
        raise UserError(f"--seed must be one of the experiment's seeds {seeds.start}..{seeds.stop - 1}, got {seed}")
    spec = embedding_config(saved, overrides)
    check_trunk_input(spec)
    folds = [folder.fold(seed, f) for f in range(saved.protocol.folds_per_seed)]
    for fold in folds:
        if folder.tested_checkpoint(fold) is None:
            raise UserError(
                f"{fold.path} has not finished training (no finished checkpoint); finish the experiment "
                "first with pml-bench run and its overrides"
            )
    data = load_data(spec.data)
    check_trunk_input(spec, data)
    run_device = resolve_device(device, Dist())
    dataset = torch_dataset(data, spec.data, train=False)
    embeddings, labels = [], data.labels
    for fold in folds:
        models = _fold_models(folder, fold, data, spec.data.choice)
        for model in models.values():
            model.to(run_device)
        emb, labels = embed(models, dataset, spec.runtime, run_device)
        embeddings.append(emb)
    final = torch.cat(embeddings, 1)
    kind = "single" if len(folds) == 1 else "concatenated"
    name = saved.experiment
    payload = {
        "embeddings": final,
        "labels": labels,
        "class_names": list(data.class_names),
        "experiment": name,
        "seed": seed,
        "folds": [fold.fold for fold in folds],
        "embedding": kind,
    }
    _write(out, lambda: atomic_torch_save(payload, out))
    metrics, metrics_file = None, None
    if int((torch.bincount(labels) >= 2).sum()) >= 2:
        metrics = {k: float(v) for k, v in BenchAccuracyCalculator().get_accuracy(final, labels).items()}
        metrics_file = metrics_path(out)
        record = {
            "experiment": name,
            "seed": seed,
            "embedding": kind,
            "dataset": spec.config["dataset"],
            "embeddings": str(out),
            "num_images": len(labels),
            "num_classes": data.num_classes,
            "metrics": metrics,
        }
        _write(metrics_file, lambda: write_json(metrics_file, record))
    return Embedded(out, name, seed, kind, spec.data.choice, len(labels), data.num_classes, metrics, metrics_file)


def _write(path: Path, write: Callable[[], object]) -> None:
    """``write()``, an atomic write of ``path``, with a failure of the file system reported as a
    :class:`UserError` naming ``path``."""
    try:
        write()
    except OSError as err:
        raise UserError(f"--out: cannot write {path}: {err.strerror or err}") from err


def _fold_models(
    folder: ExperimentFolder, fold: FoldFolder, data: DataSet, dataset_choice: str
) -> dict[str, torch.nn.Module]:
    """The models ``fold`` tested, on the CPU; for feature vectors, a width they do not take is
    named as the data set's."""
    try:
        models = trained_models(folder, fold, data)
    except UserError as err:
        if not isinstance(data, FeatureSet):
            raise
        raise UserError(
            f"dataset={dataset_choice} gives {data.features.shape[1]}-wide feature vectors, which the "
            f"experiment's trunk may not take: {err}"
        ) from err
    assert models is not None  # embed_data_set checked that the fold has finished
    return models
