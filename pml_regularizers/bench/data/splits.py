"""Class-disjoint splits: train/test halves and k folds for cross-validation."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def class_disjoint_split(labels: torch.Tensor) -> tuple[list[int], list[int]]:
    """Split the classes present in ``labels`` into a first (train) and second (test) half.

    Classes are sorted by label id (which loaders assign in sorted order of the class names);
    the train half gets ``floor(n / 2)`` classes, as in the usual CUB/Cars196 protocol.

    Parameters
    ----------
    labels : torch.Tensor
        Integer labels of the samples.

    Returns
    -------
    tuple of list of int
        ``(train_classes, test_classes)``, each sorted.

    Raises
    ------
    ValueError
        When ``labels`` holds fewer than two classes.
    """
    classes = sorted(torch.unique(labels).tolist())
    if len(classes) < 2:
        raise ValueError(f"labels must hold at least 2 classes to split, got {len(classes)}")
    half = len(classes) // 2
    return classes[:half], classes[half:]


def class_kfold(class_ids: Sequence[int], k: int) -> list[tuple[list[int], list[int]]]:
    """Make ``k`` class-disjoint folds from contiguous chunks of the sorted classes.

    Fold ``i`` validates on chunk ``i`` and trains on the other chunks, so the validation sets
    partition ``class_ids``. "A Metric Learning Reality Check" (Musgrave et al., 2020) uses
    ``k=4`` on the train classes. Chunk sizes differ by at most one, larger chunks first.

    Parameters
    ----------
    class_ids : sequence of int
        Distinct class ids.
    k : int
        Number of folds, from 2 to ``len(class_ids)``.

    Returns
    -------
    list of tuple of list of int
        ``k`` pairs ``(train_classes, val_classes)``, each sorted.

    Raises
    ------
    ValueError
        When ``class_ids`` repeats a class or ``k`` is out of range.
    """
    classes = sorted(int(c) for c in class_ids)
    if len(set(classes)) != len(classes):
        raise ValueError(f"class_ids must be distinct, got {list(class_ids)}")
    if not 2 <= k <= len(classes):
        raise ValueError(f"k must be between 2 and the number of classes ({len(classes)}), got {k}")
    base, extra = divmod(len(classes), k)
    folds, start = [], 0
    for index in range(k):
        stop = start + base + (1 if index < extra else 0)
        folds.append((classes[:start] + classes[stop:], classes[start:stop]))
        start = stop
    return folds


def training_folds(class_ids: Sequence[int], cv_folds: int) -> list[tuple[list[int], list[int]]]:
    """The runner's folds of the training classes: :func:`class_kfold` for ``cv_folds >= 2``, and
    for ``cv_folds == 0`` one fold that trains on every class and validates on none.

    Parameters
    ----------
    class_ids : sequence of int
        Distinct class ids.
    cv_folds : int
        0, or the number of folds (2 to ``len(class_ids)``).

    Returns
    -------
    list of tuple of list of int
        Pairs ``(train_classes, val_classes)``, each sorted; fold ``i`` is the runner's ``fold_i``.
    """
    if cv_folds == 0:
        return [(sorted(int(c) for c in class_ids), [])]
    return class_kfold(class_ids, cv_folds)
