"""The geometry of a loss's class centers (proxies or class weights), recorded over training.

Weight regularizers claim to move the class centers: :class:`~pml_regularizers.SkewedMeanRegularizer`
and PML's ``RegularFaceRegularizer`` spread their directions apart, PML's
``CenterInvariantRegularizer`` evens their norms. Whether they did is visible here even where
retrieval does not move. After every epoch the runner appends one entry per fold to
``center_geometry.json`` (:attr:`~pml_regularizers.bench.results.folder.FoldFolder.center_geometry`)
for each loss with class centers:

``mean_cosine``
    Mean cosine similarity over the pairs of distinct centers.
``max_cosine``
    The largest cosine between two distinct centers (the closest pair).
``nearest_cosine``
    Mean over the centers of the cosine to their nearest other center (what RegularFace penalises).
``norm_cv``
    Coefficient of variation (standard deviation over mean) of the centers' L2 norms (what
    CenterInvariant penalises); 0 when every norm is equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .io import write_json

__all__ = ["GEOMETRY_KEYS", "append_geometry", "center_geometry", "class_centers", "read_geometry"]

GEOMETRY_KEYS = ("mean_cosine", "max_cosine", "nearest_cosine", "norm_cv")


def class_centers(loss: torch.nn.Module) -> torch.Tensor | None:
    """The class centers of a PML loss as a ``(num_classes, embedding_size)`` tensor, or None.

    PML keeps them as ``proxies`` ``(C, D)`` (ProxyAnchor, ProxyNCA) or as ``W`` ``(D, C)``
    (NormalizedSoftmax, ArcFace, CosFace and the other classification losses).
    """
    proxies = getattr(loss, "proxies", None)
    if isinstance(proxies, torch.Tensor) and proxies.dim() == 2:
        return proxies.detach()
    weights = getattr(loss, "W", None)
    if isinstance(weights, torch.Tensor) and weights.dim() == 2:
        return weights.detach().t()
    return None


@torch.no_grad()
def center_geometry(centers: torch.Tensor) -> dict[str, float]:
    """:data:`GEOMETRY_KEYS` of ``centers`` (see the module docstring), computed in float64.

    Parameters
    ----------
    centers : torch.Tensor
        ``(C, D)`` class centers, ``C >= 2``, none of them zero.

    Returns
    -------
    dict of str to float

    Raises
    ------
    ValueError
        When ``centers`` is not 2-D with at least 2 rows, or a center is zero or not finite (its
        direction, and so every cosine, would be undefined).
    """
    if centers.dim() != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must have shape (C, D) with C >= 2, got {tuple(centers.shape)}")
    x = centers.double()
    norms = x.norm(dim=1)
    if not torch.isfinite(x).all() or (norms == 0).any():
        raise ValueError("centers must be finite and non-zero to have directions")
    cos = (x / norms[:, None]) @ (x / norms[:, None]).t()
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    pairs = cos[off_diagonal]
    nearest = cos.masked_fill(~off_diagonal, -torch.inf).amax(dim=1)
    return {
        "mean_cosine": float(pairs.mean()),
        "max_cosine": float(pairs.max()),
        "nearest_cosine": float(nearest.mean()),
        "norm_cv": float(norms.std(unbiased=False) / norms.mean()),
    }


def read_geometry(path: Path) -> list[dict]:
    """The entries of a ``center_geometry.json`` (``[]`` when it does not exist), each
    ``{"epoch": int, <GEOMETRY_KEYS>: float}``, in epoch order."""
    if not path.is_file():
        return []
    entries = json.loads(path.read_text())
    if not isinstance(entries, list) or any(not isinstance(e, dict) or "epoch" not in e for e in entries):
        raise ValueError(f"{path} is not a list of center-geometry entries with an 'epoch' each")
    return entries


def append_geometry(path: Path, epoch: int, centers: torch.Tensor) -> None:
    """Record the geometry of ``centers`` after ``epoch`` in ``path``, replacing the entries of
    that epoch and later ones (left by a run that resumed from an earlier checkpoint)."""
    kept = [e for e in read_geometry(path) if e["epoch"] < epoch]
    write_json(path, [*kept, {"epoch": epoch, **center_geometry(centers)}])
