"""Benchmark configs: YAML groups composed by Hydra, with command-line style overrides.

The groups live in ``pml_regularizers/bench/conf/<group>/<choice>.yaml``: dataset, trunk, embedder,
loss, miner, regularizer, optimizer, trainer, sampler. Any PML or plugin class can be named by import
path through ``_target_`` and its arguments (``loss._target_=pytorch_metric_learning.losses.CircleLoss
+loss.m=0.3``). Hydra reports a wrong group choice with the valid choices, and a wrong key with the
key's name. This module adds the checks Hydra cannot make (value ranges, names of paths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ..._checks import is_int
from ..errors import ConfigError

__all__ = [
    "GROUPS",
    "LATER_KEYS",
    "complete_saved_config",
    "config_digest",
    "experiment_name",
    "load_config",
    "tests_held_out_classes",
    "trains_on_all_classes",
]

CONF_MODULE = "pml_regularizers.bench.conf"
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


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the benchmark config from its groups and ``key=value`` overrides.

    Parameters
    ----------
    overrides : sequence of str
        Hydra override strings, e.g. ``["loss=arcface", "regularizer=skewed_mean",
        "regularizer.lam=8", "seeds=5"]``.

    Returns
    -------
    DictConfig
        The resolved config, with the chosen option of each group under ``choices``.

    Raises
    ------
    ConfigError
        For an unknown group option (listing the valid ones), an unknown key, or a value out of
        range.
    """
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(str(err)) from err
    finally:
        GlobalHydra.instance().clear()
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.choices = choices
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err)) from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"these keys must be set for this config: {', '.join(missing)} (e.g. {missing[0]}=/path/to/data)"
        )
    _validate(cfg)
    return cfg


def experiment_name(cfg: DictConfig) -> str:
    """``cfg.experiment`` if set, else
    ``dataset-loss[-miner][-regularizer]-embedder[-trainer][-all_classes]``, with the trunk's choice
    (its model name for a library trunk) after the data set when it is not the default conv-4, and
    ``all_classes`` for a run that trains on every class (``test_split: none``), so that it never
    shares a folder with the run of the same choices that holds out the test half."""
    if cfg.experiment:
        return str(cfg.experiment)
    c = cfg.choices
    parts = [c.dataset]
    if c.trunk != "conv4":
        parts.append(str(cfg.trunk.get("name", c.trunk)))
    parts.append(c.loss)
    parts += [c[g] for g in ("miner", "regularizer") if c[g] != "none"]
    parts.append(c.embedder)
    if c.trainer != "metric_loss_only":
        parts.append(c.trainer)
    if trains_on_all_classes(cfg):
        parts.append("all_classes")
    return "-".join(parts)


def config_digest(cfg: DictConfig) -> str:
    """A fingerprint of an experiment's config: the SHA-256 of its YAML with sorted keys, once the
    keys a saved config may lack are set to what it ran with (:func:`complete_saved_config`), so
    that a saved ``config.yaml`` and the config that resumes it give the same digest; 16 hex digits.
    Two configs have the same digest exactly when an experiment folder takes one for the other."""
    text = OmegaConf.to_yaml(complete_saved_config(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trains_on_all_classes(cfg: DictConfig) -> bool:
    """Whether ``cfg`` trains on every class of its data set (``test_split: none``) rather than on
    the first half of the sorted classes."""
    return bool(cfg.test_split == "none")


def tests_held_out_classes(cfg: DictConfig) -> bool:
    """Whether a run of ``cfg`` embeds and tests held-out classes: ``test: true`` with
    ``test_split: half``."""
    return bool(cfg.test) and not trains_on_all_classes(cfg)


def complete_saved_config(saved: DictConfig) -> DictConfig:
    """An experiment folder's saved config with each key of :data:`LATER_KEYS` it lacks set to the
    value that gives what it ran (a config saved before ``test_split`` existed held out the second
    half of the classes); a copy, ``saved`` is left as it is."""
    completed = saved.copy()
    with open_dict(completed):
        for key, value in LATER_KEYS.items():
            if key not in completed:
                completed[key] = value
    return completed


def _validate(cfg: DictConfig) -> None:
    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {OmegaConf.select(cfg, key)!r}")

    need(is_int(cfg.seeds) and cfg.seeds >= 1, "seeds", "an int >= 1")
    need(is_int(cfg.seed_offset) and cfg.seed_offset >= 0, "seed_offset", "an int >= 0")
    need(is_int(cfg.epochs) and cfg.epochs >= 1, "epochs", "an int >= 1")
    need(is_int(cfg.batch_size) and cfg.batch_size >= 2, "batch_size", "an int >= 2")
    need(is_int(cfg.embedding_size) and cfg.embedding_size >= 1, "embedding_size", "an int >= 1")
    need(is_int(cfg.cv_folds) and (cfg.cv_folds == 0 or cfg.cv_folds >= 2), "cv_folds", "0 or an int >= 2")
    need(cfg.patience is None or (is_int(cfg.patience) and cfg.patience >= 1), "patience", "null or an int >= 1")
    need(
        cfg.patience is None or cfg.cv_folds >= 2,
        "patience",
        "null when cv_folds=0 (early stopping needs validation folds)",
    )
    need(
        cfg.experiment is None
        or (
            isinstance(cfg.experiment, str)
            and cfg.experiment not in ("", ".", "..")
            and "/" not in cfg.experiment
            and "\\" not in cfg.experiment
        ),
        "experiment",
        "null or a folder name (no '/', '\\', '.' or '..': it names a folder inside output_dir)",
    )
    need(isinstance(cfg.test, bool), "test", "true or false")
    need(cfg.test_split in ("half", "none"), "test_split", "half or none")
    if trains_on_all_classes(cfg) and not cfg.test:
        raise ConfigError(
            "test=false cannot go with test_split=none: test=false keeps the test half unseen and "
            "test_split=none has no test half (it tests nothing; with cv_folds=k it validates on folds "
            "of every class); leave test at true"
        )
    need(cfg.test or cfg.cv_folds >= 2, "cv_folds", "an int >= 2 when test=false (validation needs folds)")
    need(
        cfg.num_workers == "auto" or (is_int(cfg.num_workers) and cfg.num_workers >= 0),
        "num_workers",
        "auto or an int >= 0",
    )
    need(cfg.precision in ("fp32", "bf16", "fp16"), "precision", "fp32, bf16 or fp16")
    need(cfg.channels_last in ("auto", True, False), "channels_last", "auto, true or false")
    reg = cfg.regularizer
    if reg.get("_target_") and not wraps_loss(reg):
        need(reg.get("attach") in ("weight", "embedding"), "regularizer.attach", "'weight' or 'embedding'")
        weight = reg.get("weight")
        need(isinstance(weight, (int, float)) and weight >= 0, "regularizer.weight", "a number >= 0")


def wraps_loss(reg: DictConfig) -> bool:
    """Whether a regularizer config names a PML loss that wraps the metric loss
    (:class:`~pml_regularizers.JacobianDeterminantLoss`) rather than a ``BaseRegularizer``.

    No ``_target_`` (``regularizer=none``) or one that does not import counts as no wrapper;
    building the models reports the latter.
    """
    from pytorch_metric_learning.losses import BaseMetricLossFunction

    if not reg.get("_target_"):
        return False
    try:
        cls = get_class(reg._target_)
    except Exception:  # noqa: BLE001 -- Hydra wraps import errors of any kind
        return False
    return isinstance(cls, type) and issubclass(cls, BaseMetricLossFunction)
