"""Local weights files for the library trunks (``weights: PATH``).

A file is read without running any pickled code: a ``.safetensors`` file through
``safetensors.torch.load_file``, any other file through ``torch.load(..., weights_only=True)``,
which only rebuilds tensors and plain containers. The state dict it holds is then checked key by
key against the trunk before it is loaded, so that a file for another architecture, or one with a
wrong shape, fails with the keys named instead of loading part of the weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeGuard

from torch import Tensor, nn

from ..extras import VISION_INSTALL, missing_module_hint
from ..results.io import error_summary, read_torch_file

__all__ = ["adapt_input_channels", "load_weights_file", "read_state_dict"]

SAFETENSORS_MISSING_MESSAGE = f"reading .safetensors weights needs safetensors: {VISION_INSTALL}"
NESTING_KEYS = ("state_dict", "model")
DDP_PREFIX = "module."
MAX_LISTED = 10


def adapt_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt the weight of a stem convolution to another number of input channels.

    Parameters
    ----------
    weight : Tensor
        Shape ``(out_channels, c, kh, kw)``, typically ``c = 3`` (RGB).
    in_channels : int
        The number of input channels wanted.

    Returns
    -------
    Tensor
        Shape ``(out_channels, in_channels, kh, kw)``. One channel gets the sum over the ``c``
        channels, so that a gray image repeated ``c`` times and the gray image alone give the
        same response. Any other number repeats the ``c`` channel filters cyclically and scales
        them by ``c / in_channels``, which keeps the response to a constant image. This is the
        rule timm applies to its pretrained stems (``timm.models.adapt_input_conv``); it is
        reproduced here so that torchvision stems and local files are adapted the same way.
    """
    if weight.ndim != 4:
        raise ValueError(f"weight must be a 4-D convolution weight, got shape {tuple(weight.shape)}")
    channels = weight.shape[1]
    if in_channels == channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / channels)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (channels / in_channels)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from a local file without running pickled code.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.safetensors`` file, or a file written by ``torch.save`` (``.pt``, ``.pth``, ...)
        holding either a state dict or a checkpoint dict that nests it under ``"state_dict"`` or
        ``"model"`` (the two layouts most training scripts write; the other entries of such a
        checkpoint, optimizer states and counters, are ignored). When every key starts with
        ``"module."`` (a model saved from ``DistributedDataParallel``), that prefix is removed.

    Returns
    -------
    dict of str to Tensor

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When the file cannot be read (truncated or not a weights file), holds Python objects
        other than tensors and plain containers (the safe loader does not rebuild them), or holds
        no state dict. The message names the file.
    ImportError
        For a ``.safetensors`` file when safetensors is not installed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        with missing_module_hint(SAFETENSORS_MISSING_MESSAGE):
            from safetensors.torch import load_file
        try:
            obj: object = load_file(path)
        except Exception as err:  # safetensors raises its own SafetensorError for bad files
            raise ValueError(
                f"weights file {path} is truncated or not a safetensors file ({error_summary(err)})"
            ) from err
    else:
        obj = _torch_load(path)
    state = _unwrap(obj, path)
    if all(key.startswith(DDP_PREFIX) for key in state):
        state = {key[len(DDP_PREFIX) :]: value for key, value in state.items()}
    return state


def load_weights_file(
    trunk: nn.Module,
    path: str | os.PathLike[str],
    *,
    removed: Sequence[str] = (),
    stems: Sequence[str] = (),
) -> None:
    """Load a local weights file into ``trunk``, every parameter and buffer of it.

    Parameters
    ----------
    trunk : nn.Module
        The trunk, already without its classifier.
    path : str or os.PathLike
        The file; see :func:`read_state_dict` for the formats.
    removed : sequence of str
        Names of the modules taken out of the classification model to make the trunk (its
        classifier, auxiliary classifiers). Keys under them are dropped, so that the state dict
        of the full classification model loads as well as the trunk's own.
    stems : sequence of str
        Keys of stem convolution weights. Where the file's tensor for such a key has another
        number of input channels than the trunk's (an RGB model's weights for a gray-image
        trunk), it is adapted with :func:`adapt_input_channels`, as pretrained stems are.

    Raises
    ------
    ValueError
        Naming the file, when a key has a shape that differs from the trunk's (each such key
        with both shapes), a tensor of another kind of dtype than the trunk's (integers or
        booleans for floating-point parameters, or the other way round: each such key with both
        dtypes; floating-point dtypes of another width load, cast), or when the file lacks keys
        of the trunk or has keys the trunk does not (both lists, shortened past 10 keys). Nothing
        is loaded then.
    """
    state = read_state_dict(path)
    own = trunk.state_dict()
    state = {k: v for k, v in state.items() if k in own or not _under(k, removed)}
    for key in stems:
        if key in state and key in own and state[key].ndim == 4 and own[key].ndim == 4:
            state[key] = adapt_input_channels(state[key], own[key].shape[1])
    mismatched = [
        f"{key} (file {tuple(value.shape)}, trunk {tuple(own[key].shape)})"
        for key, value in state.items()
        if key in own and value.shape != own[key].shape
    ]
    if mismatched:
        raise ValueError(f"weights file {Path(path)} does not fit the trunk: shape mismatch for {_listing(mismatched)}")
    # load_state_dict casts what it copies: int8 weights would load as the integers -1, 0 and 1.
    wrong_kind = [
        f"{key} (file {value.dtype}, trunk {own[key].dtype})"
        for key, value in state.items()
        if key in own and _kind(value) != _kind(own[key])
    ]
    if wrong_kind:
        raise ValueError(
            f"weights file {Path(path)} does not fit the trunk: tensors whose dtype cannot hold the trunk's values "
            f"for {_listing(wrong_kind)}; save the floating-point weights (a quantised model's weights load only "
            "into the quantised model)"
        )
    # Checked here rather than left to load_state_dict, which would load the fitting keys before
    # reporting the others. A BatchNorm ``num_batches_tracked`` absent from the file (files
    # written before torch 0.4.1 lack it) is not missing: load_state_dict fills it in.
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        raise ValueError(
            f"weights file {Path(path)} does not fit the trunk: missing keys "
            f"{_listing(missing) or 'none'}; unexpected keys {_listing(unexpected) or 'none'}"
        )
    trunk.load_state_dict(state, strict=True)


def _torch_load(path: Path) -> object:
    try:
        return read_torch_file(path)
    except ValueError as err:
        advice = (
            ": save the state dict alone, torch.save(model.state_dict(), path), or as a .safetensors file"
            if "holds Python objects" in str(err)
            else ""
        )
        raise ValueError(f"weights file {err}{advice}") from None


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        nested = [obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)]
        if nested:
            obj = nested[0]
    if not _is_state_dict(obj):
        raise ValueError(
            f"weights file {path} holds no state dict: expected a mapping of names to tensors, "
            f"possibly under {' or '.join(repr(k) for k in NESTING_KEYS)}; found {_describe(obj)}"
        )
    return dict(obj)


def _is_state_dict(obj: object) -> TypeGuard[Mapping[str, Tensor]]:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _kind(tensor: Tensor) -> str:
    """``"complex"``, ``"floating"`` or ``"integer"`` (bool included): the dtypes one can be cast
    to from another of its kind without losing what the values mean."""
    if tensor.is_complex():
        return "complex"
    return "floating" if tensor.is_floating_point() else "integer"


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in obj]
        return f"a {type(obj).__name__} with keys {_listing(keys) or 'none'}"
    return f"a {type(obj).__name__}"


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += f" ... and {len(items) - MAX_LISTED} more"
    return shown
