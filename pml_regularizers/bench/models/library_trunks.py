"""Trunks from model libraries: torchvision's and timm's classification models, without their
classifier.

Both builders take the same arguments: the library's model name, ``pretrained`` (the library's
own ImageNet weights, downloaded on first use into the library's cache), ``weights`` (a local
state dict or safetensors file, see :mod:`pml_regularizers.bench.models.weights_file`), ``in_channels``
and ``model_kwargs`` (passed on to the library's constructor). The returned model is the
library's model itself, so its ``state_dict()`` keys are the library's, and it carries an
``output_size`` attribute, the width of its features.

Freezing the trunk's BatchNorm is left to PML's trainers (``freeze_trunk_batchnorm``, the
runner's ``freeze_trunk_bn``): at the start of each epoch they put every BatchNorm layer of the
trunk in eval mode, so that it normalises with the running statistics of the pretrained weights
and no longer updates them, while its scale and shift are still trained. That is what PML's
benchmarker (powerful-benchmarker) did for the "Metric Learning Reality Check": it passed its
``freeze_batchnorm`` option to this switch and gave the optimizer every trunk parameter.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from ..._arguments import is_positive_int
from ..extras import VISION_INSTALL, missing_module_hint
from .weights_file import adapt_input_channels, load_weights_file

__all__ = ["WeightsDownloadError", "timm_trunk", "torchvision_trunk"]

TORCHVISION_MISSING_MESSAGE = f"torchvision trunks need torchvision: {VISION_INSTALL}"
TIMM_MISSING_MESSAGE = f"timm trunks need timm (and torchvision): {VISION_INSTALL}"


class WeightsDownloadError(OSError):
    """A library's pretrained weights could not be downloaded (no network, or a failed
    download); the message names the model and the way to use a local file instead."""


def torchvision_trunk(
    name: str,
    *,
    pretrained: bool | str = False,
    weights: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a torchvision classification model by name, without its classifier, as a trunk.

    Any name of ``torchvision.models.list_models(module=torchvision.models)`` works: resnet*,
    googlenet, inception_v3, vgg*, densenet*, efficientnet*, mobilenet*, convnext*, regnet*,
    vit_*, swin_*, maxvit_t, squeezenet*, ... The classifier is found without a table of
    architectures: it is the last ``Linear`` or ``Conv2d`` module of the model in definition
    order (``fc``, ``classifier``, ``classifier[-1]``, ``heads.head``, ``head``; SqueezeNet's
    1x1 convolution), which every torchvision classifier is, and it is replaced by
    ``nn.Identity``. Auxiliary classifiers (GoogLeNet's ``aux1``/``aux2``, Inception v3's
    ``AuxLogits``, which make the train-mode output a namedtuple) are removed through
    torchvision's own switch for them, the ``aux_logits`` flag with the children named
    ``aux*`` set to None, as torchvision does when it loads pretrained weights.

    Parameters
    ----------
    name : str
        A torchvision classification model name, e.g. ``"resnet50"`` or ``"googlenet"``.
    pretrained : bool or str
        ``True``: torchvision's ``DEFAULT`` weights for the model (ImageNet); a string: the
        weights of that name (``"IMAGENET1K_V1"``, the original ResNet-50 weights most metric
        learning papers used, where ``DEFAULT`` is ``IMAGENET1K_V2``). They are downloaded on
        first use into torch's hub cache (``$TORCH_HOME``).
    weights : str or os.PathLike, optional
        A local weights file, instead of ``pretrained``: a ``.safetensors`` file or a
        ``torch.save`` file, read without running pickled code. It may hold the state dict of
        the full classification model (its classifier keys, and any auxiliary classifier keys,
        are dropped), of the trunk (``trunk.state_dict()``), or either nested under
        ``"state_dict"`` or ``"model"``. Every trunk parameter and buffer must be in it.
    in_channels : int
        Channels of the input images. Other than 3, the stem convolution (the model's first
        ``Conv2d``) is adapted with
        :func:`~pml_regularizers.bench.models.weights_file.adapt_input_channels` (for 1 channel, its
        RGB filters summed), pretrained or loaded weights included.
    model_kwargs : mapping, optional
        More keyword arguments for the model's torchvision builder, e.g. ``{"dropout": 0.2}``.
        GoogLeNet and Inception v3 take ``transform_input``: torchvision turns it on with its
        ImageNet weights (it re-normalises ImageNet-normalised input the way those weights were
        trained) and leaves it off otherwise; when ``weights`` holds those ImageNet weights, or a
        trunk trained from them, pass ``{"transform_input": True}``.

    Returns
    -------
    torch.nn.Module
        The torchvision model, classifier replaced by ``nn.Identity``, in train mode, with an
        ``output_size`` attribute: the input width of the removed classifier (512 for
        resnet18, 2048 for resnet50, 1024 for googlenet), checked by a forward pass in eval
        mode. It maps images ``(N, in_channels, H, W)`` to features ``(N, output_size)`` in
        train and eval mode. It expects what torchvision's weights expect: RGB images
        normalised with the ImageNet mean and std, at least ``meta["min_size"]`` of the
        weights (ViTs exactly their ``image_size``, 224 unless ``model_kwargs`` sets another;
        the weights' ``transforms()`` give the evaluation crop, 224 for most, 299 for
        Inception v3).

    Raises
    ------
    ImportError
        When torchvision cannot be imported.
    ValueError
        For a name torchvision does not have as a classification model (with the closest
        names), an unknown ``pretrained`` weights name, both ``pretrained`` and ``weights``,
        bad ``in_channels`` or ``model_kwargs``, or a ``weights`` file that does not fit.
    FileNotFoundError
        When ``weights`` is not a file.
    WeightsDownloadError
        When ``pretrained`` weights are neither cached nor downloadable.
    """
    with missing_module_hint(TORCHVISION_MISSING_MESSAGE):
        from torchvision import models
    names = models.list_models(module=models)
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"name must be a torchvision classification model, got {name!r}{hint} (all: "
            "torchvision.models.list_models(module=torchvision.models))"
        )
    _check_common(pretrained, weights, in_channels)
    kwargs = _model_kwargs(model_kwargs, reserved=("weights",))
    available = models.get_model_weights(name)
    chosen = None
    if pretrained is not False:
        key = "DEFAULT" if pretrained is True else pretrained
        if key not in available.__members__:
            raise ValueError(
                f"pretrained must be true, false or a weights name of {name!r}: "
                f"{', '.join(available.__members__)}; got {pretrained!r}"
            )
        chosen = available[key]
    try:
        model = models.get_model(name, weights=chosen, **kwargs)
    except OSError as err:
        if chosen is None:
            raise
        raise WeightsDownloadError(
            f"torchvision's pretrained weights {chosen} for {name!r} could not be downloaded "
            f"from {chosen.url} ({_first_line(err)}). Offline, download that file elsewhere and "
            "give its path as weights: PATH (pml-bench: trunk.weights=PATH) with pretrained false"
        ) from err
    removed = _drop_auxiliary_classifiers(model)
    head_name, head = _classifier(model, name)
    width = head.in_features if isinstance(head, nn.Linear) else head.in_channels
    model.set_submodule(head_name, nn.Identity())
    stem_name = _adapt_stem(model, name, in_channels)
    if weights is not None:
        load_weights_file(model, weights, removed=[*removed, head_name], stems=[f"{stem_name}.weight"])
    image_size = getattr(model, "image_size", None)  # a ViT takes exactly this size
    if not isinstance(image_size, int):
        image_size = max((available.DEFAULT if chosen is None else chosen).meta["min_size"])
    _check_features(model, name, head_name, width, in_channels, image_size)
    model.output_size = width
    return model


def timm_trunk(
    name: str,
    *,
    in_channels: int = 1,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a timm model without its classifier, for use as a trunk.

    Parameters
    ----------
    name : str
        A timm model name, e.g. ``"resnet18"``; a pretrained tag goes into the name
        (``"resnet50.a1_in1k"``).
    in_channels : int
        Input channels; timm adapts the stem (and pretrained stem weights) to this. The default
        1 fits the runner's gray-image data sets.
    pretrained : bool
        Load timm's pretrained weights (from its cache, downloaded from the Hugging Face Hub on
        first use).
    weights : str or os.PathLike, optional
        A local weights file, instead of ``pretrained``, as for :func:`torchvision_trunk`: the
        state dict of the timm model with or without its classifier (timm's
        ``pretrained_cfg["classifier"]``), possibly nested under ``"state_dict"`` or
        ``"model"``; an RGB stem (``pretrained_cfg["first_conv"]``) is adapted to
        ``in_channels`` as timm adapts its own.
    model_kwargs : mapping, optional
        More keyword arguments for ``timm.create_model``, e.g. ``{"drop_path_rate": 0.1}``.

    Returns
    -------
    torch.nn.Module
        The model, built with ``num_classes=0`` so that it returns pooled features, and an
        ``output_size`` attribute: timm's ``head_hidden_size`` where the model defines one (the
        width of its pre-logits features), otherwise ``num_features``.

    Raises
    ------
    ImportError
        When timm (or torchvision, which timm needs) cannot be imported.
    ValueError
        For both ``pretrained`` and ``weights``, bad ``in_channels`` or ``model_kwargs``, or a
        ``weights`` file that does not fit.
    FileNotFoundError
        When ``weights`` is not a file.
    WeightsDownloadError
        When ``pretrained`` weights are neither cached nor downloadable.
    """
    with missing_module_hint(TIMM_MISSING_MESSAGE):
        import timm
    if not isinstance(pretrained, bool):
        raise ValueError(
            f"pretrained must be true or false for timm (a weights tag goes into the name, "
            f"e.g. resnet50.a1_in1k), got {pretrained!r}"
        )
    _check_common(pretrained, weights, in_channels)
    kwargs = _model_kwargs(model_kwargs, reserved=("pretrained", "num_classes", "in_chans"))
    kwargs.update(pretrained=pretrained, num_classes=0, in_chans=in_channels)
    try:
        model = timm.create_model(name, **kwargs)
    except OSError as err:
        if not pretrained:
            raise
        raise WeightsDownloadError(
            f"timm's pretrained weights for {name!r} could not be downloaded "
            f"({_first_line(err)}). Offline, save timm.create_model({name!r}, "
            "pretrained=True).state_dict() on a machine with network access (torch.save or "
            "safetensors) and give its path as weights: PATH (pml-bench: trunk.weights=PATH) "
            "with pretrained false"
        ) from err
    if weights is not None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        load_weights_file(
            model,
            weights,
            removed=_names(cfg.get("classifier")),
            stems=[f"{stem}.weight" for stem in _names(cfg.get("first_conv"))],
        )
    head_hidden_size = getattr(model, "head_hidden_size", None)
    timm_model: Any = model  # timm's attributes, and the trunk's output_size, are not nn.Module's
    timm_model.output_size = int(head_hidden_size if head_hidden_size else timm_model.num_features)
    return model


def _check_common(pretrained: object, weights: object, in_channels: object) -> None:
    if not isinstance(pretrained, (bool, str)):
        raise ValueError(f"pretrained must be true, false or a weights name, got {pretrained!r}")
    if pretrained is not False and weights is not None:
        raise ValueError(
            f"pass either pretrained or weights, not both (got pretrained={pretrained!r}, weights={weights!r})"
        )
    if not is_positive_int(in_channels):
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")


def _model_kwargs(model_kwargs: Mapping[str, Any] | None, reserved: Sequence[str]) -> dict[str, Any]:
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping):
        raise ValueError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}")
    taken = [k for k in reserved if k in model_kwargs]
    if taken:
        raise ValueError(f"model_kwargs may not set {', '.join(taken)}: the trunk's own arguments set them")
    return dict(model_kwargs)


def _drop_auxiliary_classifiers(model: nn.Module) -> list[str]:
    """Remove training-only auxiliary classifiers through torchvision's ``aux_logits`` switch;
    return the names of the removed children."""
    if not getattr(model, "aux_logits", False):
        return []
    cast(Any, model).aux_logits = False  # an attribute of torchvision's models, not nn.Module's
    removed = [n for n, _ in model.named_children() if n.lower().startswith("aux")]
    for child_name in removed:
        setattr(model, child_name, None)
    return removed


def _classifier(model: nn.Module, name: str) -> tuple[str, nn.Linear | nn.Conv2d]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not found:
        raise ValueError(f"torchvision model {name!r} has no Linear or Conv2d classifier")
    return found[-1]


def _adapt_stem(model: nn.Module, name: str, in_channels: int) -> str:
    """Adapt the model's first ``Conv2d`` (its stem) to ``in_channels``; return its name."""
    stem_name, stem = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if in_channels == stem.in_channels:
        return stem_name
    if getattr(model, "transform_input", False):
        raise ValueError(
            f"in_channels must be {stem.in_channels} for {name!r} with transform_input on (it "
            f"re-normalises RGB channels), got {in_channels}"
        )
    if stem.groups != 1:
        raise ValueError(f"in_channels cannot be changed for {name!r}: its stem {stem_name} is grouped")
    stem.weight = nn.Parameter(adapt_input_channels(stem.weight.detach(), in_channels))
    stem.in_channels = in_channels
    return stem_name


def _check_features(model: nn.Module, name: str, head_name: str, width: int, in_channels: int, side: int) -> None:
    """One eval-mode forward of a blank image: the model must now return ``(1, width)``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, side, side))
    finally:
        model.train(was_training)
    fits = isinstance(out, torch.Tensor) and out.is_floating_point() and out.shape == (1, width)
    if not fits:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"torchvision model {name!r} is not supported as a trunk: with its classifier "
            f"{head_name} removed it returns {got} for one {side}x{side} image, not features of "
            f"shape (1, {width})"
        )


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
