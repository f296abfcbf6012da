"""The typed run spec: a composed benchmark config checked once, at the command-line edge, into
frozen dataclasses that the rest of the runner receives piecewise.

:class:`RunSpec` holds the experiment's name and folder, the group choices, the config as it is
saved (``config.yaml``), and four typed parts: :class:`DataSpec` (the ``dataset`` group),
:class:`ModelSpec` (trunk, embedder, loss, miner, regularizer, optimizer, trainer, sampler),
:class:`ProtocolSpec` (seeds, folds, epochs, batches, split) and :class:`RuntimeSpec` (device,
precision, loader workers). Every key is checked: an unknown key is refused naming the closest
valid one, a value of the wrong type or range naming what the key accepts. This module imports
no model library, so a config error is reported before torch is imported; the arguments of the
``_target_`` groups are checked against their classes by
:mod:`~pml_regularizers.bench.spec.targets`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ..._arguments import is_int
from ..errors import ConfigError

__all__ = [
    "ATTACH_MODES",
    "GROUPS",
    "LATER_KEYS",
    "Component",
    "DataSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ProtocolSpec",
    "RegularizerSpec",
    "RunSpec",
    "RuntimeSpec",
    "closest",
    "complete_saved_config",
    "config_digest",
]

GROUPS = (
    "dataset",
    "trunk",
    "embedder",
    "loss",
    "miner",
    "regularizer",
    "optimizer",
    "trainer",
    "sampler",
    "preset",
)
# Top-level keys added after experiments were saved, with the value that gives what those ran: a
# saved config.yaml without one is read as holding that value (complete_saved_config).
LATER_KEYS: dict[str, object] = {"test_split": "half"}
# How a regularizer joins the metric loss: as its weight_regularizer, its embedding_regularizer,
# or as a loss that wraps it (JacobianDeterminantLoss).
ATTACH_MODES = ("weight", "embedding", "wrap")
PROTOCOL_KEYS = (
    "seeds",
    "seed_offset",
    "epochs",
    "batch_size",
    "iterations_per_epoch",
    "cv_folds",
    "test",
    "test_split",
    "patience",
)
RUNTIME_KEYS = ("device", "precision", "channels_last", "num_workers", "save_test_embeddings")
MODEL_KEYS = ("embedding_size", "freeze_trunk_bn")
TOP_LEVEL_KEYS = frozenset(
    {"experiment", "output_dir", "choices", *GROUPS, *PROTOCOL_KEYS, *RUNTIME_KEYS, *MODEL_KEYS} - {"preset"}
)
DATASET_KEYS = (
    "name",
    "root",
    "cache_dir",
    "pipeline",
    "channels",
    "size",
    "resize",
    "mean",
    "std",
    "augment",
    "fill",
    "options",
)
PIPELINES = ("grayscale", "natural")
PRECISIONS = ("fp32", "bf16", "fp16")


def closest(key: str, valid: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean <prefix>K?)`` naming the valid key closest to ``key``, or nothing when none
    is close."""
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{match[0]}?)" if match else ""


def _unknown_keys(prefix: str, keys: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse the first of ``keys`` that is not ``valid``, naming the closest valid key."""
    valid = list(valid)
    for key in keys:
        if key not in valid:
            hint = closest(key, valid, prefix)
            if hint:
                raise ConfigError(f"unknown key {prefix}{key}{hint}")
            where = f"the {prefix.rstrip('.')} config" if prefix else "the config's top level"
            raise ConfigError(f"unknown key {prefix}{key}; the keys of {where}: {', '.join(sorted(valid))}")


def _need(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Component:
    """A ``_target_`` group: the class (or function) the config names and its arguments.

    Attributes
    ----------
    group : str
        The config group (``"loss"``, ``"trunk"``...), for messages.
    choice : str
        The group's choice (``"proxy_anchor"``...), for messages and names.
    target : str
        The import path of the class or function.
    arguments : mapping
        The keyword arguments the config gives it, as plain containers.
    """

    group: str
    choice: str
    target: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **extra: Any) -> Any:
        """The object: ``target(**arguments, **extra)``, through Hydra's ``instantiate``."""
        from hydra.utils import instantiate

        return instantiate({"_target_": self.target, **self.arguments}, **extra, _convert_="object")

    def get(self, name: str, default: Any = None) -> Any:
        """The argument ``name`` the config gives, or ``default``."""
        return self.arguments.get(name, default)


def _component(group: str, choice: str, node: Mapping[str, Any], reserved: Iterable[str] = ()) -> Component | None:
    """The group ``node`` as a :class:`Component`; None for an empty group (``miner=none``)."""
    if not node:
        return None
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{group}._target_ must name a class or function by its import path, got {target!r}")
    arguments = {k: v for k, v in node.items() if k != "_target_" and k not in set(reserved)}
    return Component(group, choice, target, arguments)


@dataclass(frozen=True)
class DataSpec:
    """The ``dataset`` group: where the data set lies and how its images are served.

    Attributes
    ----------
    choice : str
        The group's choice (``glyphs``, ``cub``...).
    name : str
        The loader (:func:`~pml_regularizers.bench.data.load_dataset`'s name).
    root : str or None
        Its folder or file.
    cache_dir : str
        Folder for generated data and decoded-image caches.
    pipeline : str
        ``"grayscale"`` (decoded once, held in memory) or ``"natural"`` (RGB files decoded as
        they are served).
    channels, size : int
        Channels and side of the images the trunk sees.
    resize : int or None
        Evaluation resize before the centre crop (natural pipeline).
    mean, std : tuple of float or None
        Normalisation (natural pipeline).
    augment : bool
        Augment training images.
    fill : float
        Padding value of the grayscale pipeline's shifts, in ``[0, 1]``.
    options : mapping
        The loader's own options.
    """

    choice: str
    name: str
    root: str | None
    cache_dir: str
    pipeline: str
    channels: int
    size: int
    resize: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augment: bool
    fill: float
    options: Mapping[str, Any]

    @classmethod
    def from_node(cls, choice: str, node: Mapping[str, Any]) -> DataSpec:
        """Check the ``dataset`` node; configs saved before ``pipeline`` existed read as
        ``grayscale``, as they ran."""
        _unknown_keys("dataset.", node, DATASET_KEYS)
        for key in ("name", "cache_dir", "channels", "size", "augment", "fill"):
            if key not in node:
                raise ConfigError(f"dataset.{key} must be set (dataset={choice})")
        pipeline = node.get("pipeline", "grayscale")
        _need(pipeline in PIPELINES, "dataset.pipeline", " or ".join(PIPELINES), pipeline)
        root = node.get("root")
        _need(root is None or isinstance(root, str), "dataset.root", "null or a path", root)
        _need(is_int(node["channels"], 1), "dataset.channels", "an int >= 1", node["channels"])
        _need(is_int(node["size"], 0), "dataset.size", "an int >= 0", node["size"])
        resize = node.get("resize")
        _need(resize is None or is_int(resize, 1), "dataset.resize", "null or an int >= 1", resize)
        _need(isinstance(node["augment"], bool), "dataset.augment", "true or false", node["augment"])
        _need(_number(node["fill"]), "dataset.fill", "a number", node["fill"])
        options = node.get("options") or {}
        _need(isinstance(options, Mapping), "dataset.options", "a mapping of the loader's options", options)
        mean, std = node.get("mean"), node.get("std")
        if pipeline == "natural":
            for key, value in (("resize", resize), ("mean", mean), ("std", std)):
                if value is None:
                    raise ConfigError(f"dataset.{key} must be set for dataset.pipeline=natural (dataset={choice})")
        return cls(
            choice=choice,
            name=str(node["name"]),
            root=root,
            cache_dir=str(node["cache_dir"]),
            pipeline=pipeline,
            channels=int(node["channels"]),
            size=int(node["size"]),
            resize=resize,
            mean=None if mean is None else tuple(mean),
            std=None if std is None else tuple(std),
            augment=node["augment"],
            fill=float(node["fill"]),
            options=dict(options),
        )


@dataclass(frozen=True)
class RegularizerSpec:
    """The ``regularizer`` group: a regularizer and how it joins the metric loss.

    Attributes
    ----------
    component : Component
        The regularizer, without ``weight`` and ``attach``.
    attach : str
        ``"weight"`` (the loss's ``weight_regularizer``), ``"embedding"`` (its
        ``embedding_regularizer``) or ``"wrap"`` (a loss that wraps the metric loss:
        :class:`~pml_regularizers.JacobianDeterminantLoss`).
    weight : float or None
        Its weight in the loss (``weight_reg_weight`` or ``embedding_reg_weight``); None with
        ``wrap``, whose loss weighs its own terms.
    """

    component: Component
    attach: str
    weight: float | None


@dataclass(frozen=True)
class OptimizerSpec:
    """The ``optimizer`` group: the optimizer of every model, and the learning rate of the metric
    loss's own parameters (proxies, class weights).

    Attributes
    ----------
    component : Component
        The optimizer, without ``loss_lr``.
    loss_lr : float
        The learning rate of the loss's parameters.
    """

    component: Component
    loss_lr: float


@dataclass(frozen=True)
class ModelSpec:
    """What one fold trains: the ``_target_`` groups, the embedding size and trunk batch norm.

    Attributes
    ----------
    trunk, embedder, loss, trainer : Component
        The trunk (built with ``in_features`` for feature data), the embedder (built with
        ``in_features`` and ``out_features``), the metric loss (built with ``num_classes`` and
        ``embedding_size`` when it takes them) and the PML trainer.
    miner, sampler : Component or None
        The miner, and the batch sampler (built with the labels and the batch size).
    regularizer : RegularizerSpec or None
        The regularizer.
    optimizer : OptimizerSpec
        The optimizers.
    embedding_size : int
        The embedder's output width.
    freeze_trunk_bn : bool
        Freeze the trunk's batch-norm statistics (PML's ``freeze_trunk_batchnorm``).
    """

    trunk: Component
    embedder: Component
    loss: Component
    miner: Component | None
    regularizer: RegularizerSpec | None
    optimizer: OptimizerSpec
    trainer: Component
    sampler: Component | None
    embedding_size: int
    freeze_trunk_bn: bool

    def components(self) -> list[Component]:
        """Every component, in the order they are built."""
        parts: list[Component | None] = [
            self.trunk,
            self.embedder,
            self.loss,
            None if self.regularizer is None else self.regularizer.component,
            self.miner,
            self.optimizer.component,
            self.trainer,
            self.sampler,
        ]
        return [p for p in parts if p is not None]


@dataclass(frozen=True)
class ProtocolSpec:
    """The protocol: seeds, class-disjoint folds, epochs and batches, and what is held out.

    Attributes
    ----------
    seeds, seed_offset : int
        The seeds ``seed_offset .. seed_offset + seeds - 1``.
    epochs : int
        The epoch cap of every fold.
    batch_size : int
        The global batch (split over torchrun processes).
    iterations_per_epoch : int or None
        Batches an epoch; None for one pass over the fold through the sampler.
    cv_folds : int
        0 (train on the whole training half) or k >= 2 class-disjoint folds, each keeping its best
        validation epoch.
    test : bool
        Test on the held-out classes.
    test_split : str
        ``"half"`` (the second half of the sorted classes is held out) or ``"none"`` (every class
        trains).
    patience : int or None
        Early stopping after this many epochs without a better validation MAP@R.
    """

    seeds: int
    seed_offset: int
    epochs: int
    batch_size: int
    iterations_per_epoch: int | None
    cv_folds: int
    test: bool
    test_split: str
    patience: int | None

    @property
    def seed_range(self) -> range:
        """The seeds the experiment runs."""
        return range(self.seed_offset, self.seed_offset + self.seeds)

    @property
    def validated(self) -> bool:
        """Whether folds are validated (cross-validation)."""
        return self.cv_folds > 0

    @property
    def trains_on_all_classes(self) -> bool:
        """Whether every class trains (``test_split: none``) rather than the first half of the
        sorted classes."""
        return self.test_split == "none"

    @property
    def tests_held_out_classes(self) -> bool:
        """Whether the held-out classes are embedded and tested: ``test`` with ``test_split:
        half``."""
        return self.test and not self.trains_on_all_classes

    @property
    def folds_per_seed(self) -> int:
        """Trained models per seed: the folds, or one without cross-validation."""
        return self.cv_folds or 1


@dataclass(frozen=True)
class RuntimeSpec:
    """How the run uses its machine; none of it changes what is computed, up to floating point.

    Attributes
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision : str
        ``fp32``, ``bf16`` or ``fp16``: the trunk's forward pass under autocast.
    channels_last : str or bool
        ``"auto"`` (on CUDA), True or False.
    num_workers : str or int
        ``"auto"`` or the DataLoader workers per process.
    save_test_embeddings : bool
        Keep each seed's test embeddings.
    """

    device: str
    precision: str
    channels_last: str | bool
    num_workers: str | int
    save_test_embeddings: bool


@dataclass(frozen=True)
class RunSpec:
    """One benchmark experiment, checked (the module's description).

    Attributes
    ----------
    experiment : str
        The experiment's name, its folder's name: ``experiment`` when set, else derived from the
        group choices (:meth:`derived_name`).
    output_dir : str
        The folder of experiment folders.
    choices : mapping of str to str or None
        The choice of each config group.
    data : DataSpec
    models : ModelSpec
    protocol : ProtocolSpec
    runtime : RuntimeSpec
    config : dict
        The resolved config as plain containers, in its key order: what ``config.yaml`` holds.
    """

    experiment: str
    output_dir: str
    choices: Mapping[str, str | None]
    data: DataSpec
    models: ModelSpec
    protocol: ProtocolSpec
    runtime: RuntimeSpec
    config: dict[str, Any] = field(repr=False, compare=False)

    @property
    def folder(self) -> Path:
        """The experiment folder, ``<output_dir>/<experiment>`` (``~`` expanded)."""
        return Path(self.output_dir).expanduser() / self.experiment

    @property
    def digest(self) -> str:
        """:func:`config_digest` of the config."""
        return config_digest(self.config)

    def to_yaml(self) -> str:
        """The config as ``config.yaml`` holds it."""
        return OmegaConf.to_yaml(OmegaConf.create(self.config))

    def with_dataset(self, choice: str, node: Mapping[str, Any]) -> RunSpec:
        """This experiment with another data set (``pml-bench embed``): the ``dataset`` node and
        its choice replaced, everything else kept."""
        config = {**self.config, "dataset": dict(node), "choices": {**self.config["choices"], "dataset": choice}}
        return RunSpec.from_config(config)

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> RunSpec:
        """Check a composed config (or a saved ``config.yaml``) into a spec.

        Parameters
        ----------
        cfg : DictConfig or mapping
            A config from :func:`~pml_regularizers.bench.spec.compose.load_config`, or an
            experiment folder's ``config.yaml``; keys added since it was saved are completed
            (:func:`complete_saved_config`).

        Raises
        ------
        ConfigError
            For an unknown key (naming the closest valid one), a missing one, or a value of the
            wrong type or range (naming what the key accepts).
        """
        config = complete_saved_config(cfg)
        _unknown_keys("", config, TOP_LEVEL_KEYS)
        missing = sorted(TOP_LEVEL_KEYS - set(config))
        if missing:
            raise ConfigError(f"the config lacks the key(s) {', '.join(missing)}")
        choices = dict(config["choices"])
        protocol = _protocol(config)
        runtime = _runtime(config)
        data = DataSpec.from_node(str(choices.get("dataset")), config["dataset"])
        models = _models(config, choices)
        experiment = config["experiment"]
        _need(
            experiment is None
            or (
                isinstance(experiment, str)
                and experiment not in ("", ".", "..")
                and "/" not in experiment
                and "\\" not in experiment
            ),
            "experiment",
            "null or a folder name (no '/', '\\', '.' or '..': it names a folder inside output_dir)",
            experiment,
        )
        _need(isinstance(config["output_dir"], str), "output_dir", "a folder", config["output_dir"])
        spec = cls(
            experiment="",
            output_dir=config["output_dir"],
            choices=choices,
            data=data,
            models=models,
            protocol=protocol,
            runtime=runtime,
            config=config,
        )
        name = experiment if experiment is not None else spec.derived_name()
        return cls(name, spec.output_dir, choices, data, models, protocol, runtime, config)

    def derived_name(self) -> str:
        """``dataset[-trunk]-loss[-miner][-regularizer]-embedder[-trainer][-all_classes]``: the
        trunk's choice (its model name for a library trunk) when it is not the default conv-4, and
        ``all_classes`` for a run that trains on every class, so that it never shares a folder with
        the run of the same choices that holds out the test half."""
        c = self.choices
        parts = [str(c["dataset"])]
        if c["trunk"] != "conv4":
            parts.append(str(self.models.trunk.get("name", c["trunk"])))
        parts.append(str(c["loss"]))
        parts += [str(c[g]) for g in ("miner", "regularizer") if c[g] != "none"]
        parts.append(str(c["embedder"]))
        if c["trainer"] != "metric_loss_only":
            parts.append(str(c["trainer"]))
        if self.protocol.trains_on_all_classes:
            parts.append("all_classes")
        return "-".join(parts)


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True))


def _protocol(c: Mapping[str, Any]) -> ProtocolSpec:
    _need(is_int(c["seeds"], 1), "seeds", "an int >= 1", c["seeds"])
    _need(is_int(c["seed_offset"], 0), "seed_offset", "an int >= 0", c["seed_offset"])
    _need(is_int(c["epochs"], 1), "epochs", "an int >= 1", c["epochs"])
    _need(is_int(c["batch_size"], 2), "batch_size", "an int >= 2", c["batch_size"])
    iterations = c["iterations_per_epoch"]
    _need(iterations is None or is_int(iterations, 1), "iterations_per_epoch", "null or an int >= 1", iterations)
    cv = c["cv_folds"]
    _need(is_int(cv) and (cv == 0 or cv >= 2), "cv_folds", "0 or an int >= 2", cv)
    patience = c["patience"]
    _need(patience is None or is_int(patience, 1), "patience", "null or an int >= 1", patience)
    _need(
        patience is None or cv >= 2,
        "patience",
        "null when cv_folds=0 (early stopping needs validation folds)",
        patience,
    )
    _need(isinstance(c["test"], bool), "test", "true or false", c["test"])
    _need(c["test_split"] in ("half", "none"), "test_split", "half or none", c["test_split"])
    if c["test_split"] == "none" and not c["test"]:
        raise ConfigError(
            "test=false cannot go with test_split=none: test=false keeps the test half unseen and "
            "test_split=none has no test half (it tests nothing; with cv_folds=k it validates on folds "
            "of every class); leave test at true"
        )
    _need(c["test"] or cv >= 2, "cv_folds", "an int >= 2 when test=false (validation needs folds)", cv)
    return ProtocolSpec(
        seeds=c["seeds"],
        seed_offset=c["seed_offset"],
        epochs=c["epochs"],
        batch_size=c["batch_size"],
        iterations_per_epoch=iterations,
        cv_folds=cv,
        test=c["test"],
        test_split=c["test_split"],
        patience=patience,
    )


def _runtime(c: Mapping[str, Any]) -> RuntimeSpec:
    workers = c["num_workers"]
    _need(workers == "auto" or is_int(workers, 0), "num_workers", "auto or an int >= 0", workers)
    _need(c["precision"] in PRECISIONS, "precision", ", ".join(PRECISIONS[:-1]) + " or fp16", c["precision"])
    _need(c["channels_last"] in ("auto", True, False), "channels_last", "auto, true or false", c["channels_last"])
    _need(isinstance(c["device"], str), "device", "'auto', 'cpu', 'cuda[:N]' or 'mps'", c["device"])
    save = c["save_test_embeddings"]
    _need(isinstance(save, bool), "save_test_embeddings", "true or false", save)
    return RuntimeSpec(c["device"], c["precision"], c["channels_last"], workers, save)


def _models(c: Mapping[str, Any], choices: Mapping[str, Any]) -> ModelSpec:
    _need(is_int(c["embedding_size"], 1), "embedding_size", "an int >= 1", c["embedding_size"])
    _need(isinstance(c["freeze_trunk_bn"], bool), "freeze_trunk_bn", "true or false", c["freeze_trunk_bn"])

    def required(group: str, reserved: Iterable[str] = ()) -> Component:
        component = _component(group, str(choices.get(group)), c[group], reserved)
        if component is None:
            raise ConfigError(f"{group}: choose one; an empty {group} config cannot be built")
        return component

    optimizer_node = c["optimizer"]
    loss_lr = optimizer_node.get("loss_lr")
    _need(_number(loss_lr) and loss_lr >= 0, "optimizer.loss_lr", "a number >= 0", loss_lr)
    return ModelSpec(
        trunk=required("trunk"),
        embedder=required("embedder"),
        loss=required("loss"),
        miner=_component("miner", str(choices.get("miner")), c["miner"]),
        regularizer=_regularizer(c["regularizer"], str(choices.get("regularizer"))),
        optimizer=OptimizerSpec(required("optimizer", ("loss_lr",)), float(loss_lr)),
        trainer=required("trainer"),
        sampler=_component("sampler", str(choices.get("sampler")), c["sampler"]),
        embedding_size=c["embedding_size"],
        freeze_trunk_bn=c["freeze_trunk_bn"],
    )


def _regularizer(node: Mapping[str, Any], choice: str) -> RegularizerSpec | None:
    component = _component("regularizer", choice, node, ("weight", "attach"))
    if component is None:
        return None
    attach = node.get("attach")
    if attach not in ATTACH_MODES:
        raise ConfigError(f"regularizer.attach must be weight, embedding or wrap, got {attach!r}")
    weight = node.get("weight")
    if attach == "wrap":
        _need(weight is None, "regularizer.weight", "absent with attach=wrap (the loss weighs its own terms)", weight)
        return RegularizerSpec(component, attach, None)
    if not isinstance(weight, (int, float)) or not _number(weight) or weight < 0:
        raise ConfigError(f"regularizer.weight must be a number >= 0, got {weight!r}")
    return RegularizerSpec(component, attach, float(weight))


# Regularizers that wrap the metric loss, saved before ``attach: wrap`` said so.
WRAPPING_TARGETS = ("pml_regularizers.JacobianDeterminantLoss",)
# DVMLTrainer configs saved before the dvml trainer group stated PML's loss_weights ran with PML's
# default, every term weighted 1.
DVML_TRAINER = "pml_regularizers.DVMLTrainer"
DVML_LOSS_WEIGHTS = {"kl_loss": 1.0, "reconstruction_loss": 1.0, "synthetic_metric_loss": 1.0, "metric_loss": 1.0}


def complete_saved_config(saved: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """An experiment folder's saved config as plain containers, completed with what was implicit
    when it was saved: each key of :data:`LATER_KEYS` it lacks set to the value that gives what it
    ran (a config saved before ``test_split`` existed held out the second half of the classes),
    ``attach: wrap`` for a regularizer that wraps the loss (:data:`WRAPPING_TARGETS`), which such
    configs did not state, and a DVMLTrainer's ``loss_weights`` of 1 for every term (PML's default,
    which such configs left unset). A copy; ``saved`` is left as it is."""
    completed = _plain(saved)
    for key, value in LATER_KEYS.items():
        completed.setdefault(key, value)
    regularizer = completed.get("regularizer")
    if isinstance(regularizer, dict) and regularizer.get("_target_") in WRAPPING_TARGETS:
        regularizer.setdefault("attach", "wrap")
    trainer = completed.get("trainer")
    if isinstance(trainer, dict) and trainer.get("_target_") == DVML_TRAINER and trainer.get("loss_weights") is None:
        trainer["loss_weights"] = dict(DVML_LOSS_WEIGHTS)
    return completed


def config_digest(config: Mapping[str, Any]) -> str:
    """A fingerprint of an experiment's config: the SHA-256 of its YAML with sorted keys, once the
    keys a saved config may lack are set to what it ran with (:func:`complete_saved_config`), so
    that a saved ``config.yaml`` and the config that resumes it give the same digest; 16 hex digits.
    Two configs have the same digest exactly when an experiment folder takes one for the other."""
    text = OmegaConf.to_yaml(OmegaConf.create(complete_saved_config(config)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
