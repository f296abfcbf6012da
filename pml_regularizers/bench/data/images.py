"""Containers for benchmark data and the torch datasets that serve the in-memory ones.

An :class:`ImageSet` keeps its images decoded, as one ``uint8`` tensor, so an epoch never touches
the disk or an image codec; a :class:`FileSet` keeps only the image files' paths, for the natural
image pipeline that decodes each image when it is served; a :class:`FeatureSet` keeps precomputed
feature vectors.

Each set also holds ``labels``, an ``int64`` tensor of shape ``(N,)`` with one label per sample,
and ``class_names``, a list of str where ``class_names[i]`` names the class with label ``i``.
Labels are contiguous ids ``0..num_classes-1``; loaders assign them in sorted order of the class
names, so the class with the smallest name gets label 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch.nn import functional as nnf
from torch.utils.data import Dataset


def _check_tensor(name: str, tensor: torch.Tensor, expected: str, valid: bool) -> None:
    """Raise ValueError naming ``name`` and the ``expected`` tensor unless ``valid``."""
    if not valid:
        raise ValueError(f"{name} must be {expected}, got dtype {tensor.dtype} and shape {tuple(tensor.shape)}")


def _check_labels(labels: torch.Tensor, count: int, num_classes: int, owner: str) -> None:
    valid = labels.dtype == torch.int64 and labels.dim() == 1 and labels.numel() == count
    _check_tensor(f"{owner}.labels", labels, f"an int64 tensor of shape ({count},)", valid)
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{owner}.labels must lie in 0..{num_classes - 1} (one id per class name), "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )


def _select_classes(
    labels: torch.Tensor, class_ids: Sequence[int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Return the mask of kept samples, their new labels and the validated class ids."""
    ids = [int(c) for c in class_ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must not repeat a class, got {ids}")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class_ids must lie in 0..{num_classes - 1}, got {bad}")
    mapping = torch.full((num_classes,), -1, dtype=torch.int64)
    mapping[torch.tensor(ids, dtype=torch.int64)] = torch.arange(len(ids))
    new_labels = mapping[labels]
    keep = new_labels >= 0
    return keep, new_labels[keep], ids


_Set = TypeVar("_Set", bound="_LabelledSet")


class _LabelledSet:
    """What the three containers share: ``labels``, ``class_names`` and keeping some classes."""

    labels: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    def subset(self: _Set, class_ids: Sequence[int]) -> _Set:
        """Keep only the samples of ``class_ids``, relabelled ``0..k-1`` in the given order.

        Parameters
        ----------
        class_ids : sequence of int
            Distinct labels of this set.

        Returns
        -------
        ImageSet or FileSet or FeatureSet
            The selected samples, in their original order, in a set of this one's type.
        """
        keep, labels, ids = _select_classes(self.labels, class_ids, self.num_classes)
        return self._select(keep, labels, [self.class_names[i] for i in ids])

    def _select(self: _Set, keep: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> _Set:
        """The samples where ``keep`` is true, with the new ``labels`` and ``class_names``."""
        raise NotImplementedError


@dataclass
class ImageSet(_LabelledSet):
    """Decoded grayscale images with their ``labels`` and ``class_names`` (see the module
    docstring).

    Attributes
    ----------
    images : torch.Tensor
        ``uint8`` tensor of shape ``(N, 1, H, W)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        valid = self.images.dtype == torch.uint8 and self.images.dim() == 4 and self.images.shape[1] == 1
        _check_tensor("ImageSet.images", self.images, "a uint8 tensor of shape (N, 1, H, W)", valid)
        _check_labels(self.labels, self.images.shape[0], len(self.class_names), "ImageSet")

    def _select(self, keep: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> ImageSet:
        return ImageSet(self.images[keep], labels, class_names)


@dataclass
class FileSet(_LabelledSet):
    """Image files, not decoded, with their ``labels`` and ``class_names`` (see the module
    docstring).

    Attributes
    ----------
    paths : list of pathlib.Path
        The image files, one per sample.
    """

    paths: list[Path]
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.paths, list):
            raise ValueError(f"FileSet.paths must be a list of pathlib.Path, got {type(self.paths).__name__}")
        for path in self.paths:
            if not isinstance(path, Path):
                raise ValueError(f"FileSet.paths must hold pathlib.Path items, got {path!r}")
        _check_labels(self.labels, len(self.paths), len(self.class_names), "FileSet")

    @classmethod
    def from_class_keys(cls, paths: Sequence[Path], class_keys: Sequence[str]) -> FileSet:
        """Label ``paths`` by their class names, label ``i`` going to the ``i``-th in sorted order.

        Parameters
        ----------
        paths : sequence of pathlib.Path
            The image files.
        class_keys : sequence of str
            Class name of each file.

        Returns
        -------
        FileSet
            The files, in the given order, with ``class_names`` the sorted distinct keys.
        """
        if len(paths) != len(class_keys):
            raise ValueError(f"got {len(paths)} paths but {len(class_keys)} class keys")
        class_names = sorted(set(class_keys))
        index = {name: label for label, name in enumerate(class_names)}
        labels = torch.tensor([index[key] for key in class_keys], dtype=torch.int64)
        return cls(list(paths), labels, class_names)

    @property
    def class_keys(self) -> list[str]:
        """The class name of each file, in the order of ``paths``."""
        return [self.class_names[label] for label in self.labels.tolist()]

    def _select(self, keep: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> FileSet:
        paths = [path for path, kept in zip(self.paths, keep.tolist()) if kept]
        return FileSet(paths, labels, class_names)


@dataclass
class FeatureSet(_LabelledSet):
    """Precomputed feature vectors with their ``labels`` and ``class_names`` (see the module
    docstring).

    Attributes
    ----------
    features : torch.Tensor
        ``float32`` tensor of shape ``(N, D)``.
    """

    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        valid = self.features.dtype == torch.float32 and self.features.dim() == 2
        _check_tensor("FeatureSet.features", self.features, "a float32 tensor of shape (N, D)", valid)
        _check_labels(self.labels, self.features.shape[0], len(self.class_names), "FeatureSet")

    def _select(self, keep: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> FeatureSet:
        return FeatureSet(self.features[keep], labels, class_names)


class TensorImageDataset(Dataset):
    """Serve an :class:`ImageSet` as normalised float tensors, optionally augmented.

    Each item is ``(image, label)``: ``image`` is a ``float32`` tensor ``(1, H, W)``, the pixel
    values scaled to ``[0, 1]`` and then normalised as ``(x - mean) / std``. Augmentation draws
    from torch's global random generator, so it is reproducible under ``torch.manual_seed``.

    Parameters
    ----------
    image_set : ImageSet
        The decoded images.
    augment : bool, default False
        Apply a random translation (and flip, when ``hflip``) to every item.
    max_shift : int, default 2
        Largest translation, in pixels, along each axis.
    hflip : bool, default False
        With ``augment``, mirror the image left-right with probability 0.5.
    mean, std : float, default 0.5
        Normalisation constants, in units of the ``[0, 1]`` scaled pixels.
    fill : float, default 0.0
        Value, in ``[0, 1]`` pixel units, of the border uncovered by a translation. Zero is
        black; use 1.0 for white-background images such as glyphs and Omniglot.

    Attributes
    ----------
    labels : torch.Tensor
        The ``int64`` labels, for samplers such as PML's ``MPerClassSampler``.
    """

    def __init__(
        self,
        image_set: ImageSet,
        augment: bool = False,
        max_shift: int = 2,
        hflip: bool = False,
        mean: float = 0.5,
        std: float = 0.5,
        fill: float = 0.0,
    ) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 pixels, got {max_shift}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.images = image_set.images
        self.labels = image_set.labels
        self.augment = augment
        self.max_shift = int(max_shift)
        self.hflip = hflip
        self.mean = float(mean)
        self.std = float(std)
        self.fill = float(fill)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div_(255.0)
        if self.augment:
            image = self._augment(image)
        return (image - self.mean) / self.std, int(self.labels[index])

    def _augment(self, image: torch.Tensor) -> torch.Tensor:
        shift = self.max_shift
        if shift:
            height, width = image.shape[-2:]
            padded = nnf.pad(image, (shift, shift, shift, shift), value=self.fill)
            left, top = torch.randint(0, 2 * shift + 1, (2,)).tolist()
            image = padded[:, top : top + height, left : left + width]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class FeatureDataset(Dataset):
    """Serve a :class:`FeatureSet` as ``(features[i], label)`` pairs.

    Parameters
    ----------
    feature_set : FeatureSet
        The feature vectors and labels.

    Attributes
    ----------
    labels : torch.Tensor
        The ``int64`` labels, for samplers such as PML's ``MPerClassSampler``.
    """

    def __init__(self, feature_set: FeatureSet) -> None:
        self.features = feature_set.features
        self.labels = feature_set.labels

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], int(self.labels[index])
