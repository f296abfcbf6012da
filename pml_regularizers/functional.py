"""Pure tensor functions behind the plugin's modules.

Everything here is stateless math on tensors: no PML objects, no module state. The modules in
:mod:`pml_regularizers.regularizers` validate their input, pick the function that fits their distance
and call these.

The skewed mean
---------------
For values :math:`a_1, \\dots, a_N` and a skew :math:`\\lambda`,

.. math::

    \\mathrm{SM}_\\lambda(a) = \\frac{1}{\\lambda}
        \\log\\Big(\\frac{1}{N}\\sum_{k=1}^{N} e^{\\lambda a_k}\\Big),
    \\qquad \\mathrm{SM}_0(a) = \\frac{1}{N}\\sum_k a_k .

It lies between :math:`\\min a` and :math:`\\max a`, grows with :math:`\\lambda`, tends to
:math:`\\max a` as :math:`\\lambda \\to +\\infty` and to :math:`\\min a` as
:math:`\\lambda \\to -\\infty`, and its gradient is :math:`\\mathrm{softmax}(\\lambda a)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = [
    "at_least_float32",
    "skewed_mean",
    "pair_mask",
    "default_block_size",
    "row_skewed_means",
    "gram_pairwise_skewed_mean",
    "pairwise_cosine_stats",
]

GramTransform = Literal["similarity", "neg_chord"]

_BLOCK_ELEMENTS = 1 << 21  # about 2M entries (8 MB in float32) per row block of a pair matrix
_MIN_BLOCKS = 8  # enough blocks for the triangle-only kernel to skip most of the lower half


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 or bfloat16, else unchanged: the compute dtype of the
    pair computations, whose exponentials and sums overflow or lose precision in half types."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_lam(lam: float, allow_inf: bool) -> float:
    lam = float(lam)
    if math.isnan(lam) or (not allow_inf and math.isinf(lam)):
        expected = "a real number (inf allowed)" if allow_inf else "a finite real number"
        raise ValueError(f"lam must be {expected}, got {lam}")
    return lam


def _reduced_dims(x: Tensor, dim: int | Sequence[int] | None) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(x.ndim))
    if isinstance(dim, int):
        return (dim,)
    return tuple(dim)


def skewed_mean(
    x: Tensor,
    lam: float,
    dim: int | Sequence[int] | None = None,
    keepdim: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """Skewed (log-mean-exp) mean of ``x`` along ``dim``.

    .. math::

        \\mathrm{SM}_\\lambda(x) = \\frac{1}{\\lambda}
            \\log\\Big(\\frac{1}{N}\\sum_k e^{\\lambda x_k}\\Big)

    with the arithmetic mean at ``lam == 0`` and the max (min) at ``lam == +inf`` (``-inf``).

    Parameters
    ----------
    x : Tensor
        Floating-point values.
    lam : float
        The skew :math:`\\lambda`. Positive values lean towards the largest entries, negative
        ones towards the smallest. ``nan`` is rejected.
    dim : int or sequence of int, optional
        Dimensions to reduce; all of them by default.
    keepdim : bool
        Keep the reduced dimensions with size 1.
    mask : Tensor, optional
        Boolean tensor broadcastable to ``x``: only entries where it is ``True`` take part. Every
        reduced slice must keep at least one entry.

    Returns
    -------
    Tensor
        The skewed mean, in ``x``'s dtype.

    Notes
    -----
    The value is computed as :math:`m + \\lambda^{-1}\\log t`, with :math:`m` the extreme entry
    (max for :math:`\\lambda > 0`, min otherwise) and :math:`t = \\mathrm{mean}\\,e^{\\lambda(x-m)}
    \\in (0, 1]`, so nothing overflows for any :math:`|\\lambda|`. When :math:`t > 1/2` the logarithm
    is taken as ``log1p(mean(expm1(.)))``, which keeps full precision as :math:`\\lambda \\to 0`,
    where the value tends continuously to the arithmetic mean; a ``lam`` smaller in magnitude than
    the square root of the smallest normal float (1.5e-154 in float64) is taken as 0, since
    :math:`\\mathrm{SM}_\\lambda - \\mathrm{mean} \\approx \\lambda\\,\\mathrm{var}/2` is then below
    resolution. The gradient with respect to ``x``
    is :math:`\\mathrm{softmax}(\\lambda x)` over the reduced entries.
    """
    lam = _check_lam(lam, allow_inf=True)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    dims = _reduced_dims(x, dim)
    if mask is None:
        mask = torch.ones((), dtype=torch.bool, device=x.device)
    elif mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
    mask = mask.expand_as(x)
    count = mask.sum(dim=dims, keepdim=True).to(x.dtype)
    if bool((count == 0).any()):
        raise ValueError("mask leaves no entry in some reduced slice")

    def finish(value: Tensor) -> Tensor:
        return value if keepdim else value.squeeze(dims)

    tiny = torch.finfo(torch.promote_types(x.dtype, torch.float32)).tiny
    if abs(lam) < math.sqrt(tiny):  # lam * (x - m) would be subnormal: SM_lam = mean to resolution
        return finish(x.masked_fill(~mask, 0).sum(dim=dims, keepdim=True) / count)
    fill = -math.inf if lam > 0 else math.inf
    extreme = x.masked_fill(~mask, fill)
    extreme = extreme.amax(dim=dims, keepdim=True) if lam > 0 else extreme.amin(dim=dims, keepdim=True)
    if math.isinf(lam):
        return finish(extreme)
    m = extreme.detach()
    z = (lam * (x - m)).masked_fill(~mask, -math.inf)
    t = torch.exp(z).sum(dim=dims, keepdim=True) / count
    u = torch.expm1(z).masked_fill(~mask, 0).sum(dim=dims, keepdim=True) / count
    log_t = torch.where(t > 0.5, torch.log1p(u), torch.log(t))
    return finish(m + log_t / lam)


def pair_mask(row_ids: Tensor, col_ids: Tensor, group_size: int, upper: bool = False) -> Tensor:
    """Which (row, column) index pairs count as pairs of different groups.

    Rows ``r`` belong to group ``r // group_size`` (class-major layout, as PML's multi-center losses
    store their centers). Pairs inside one group, the diagonal included, never count.

    Parameters
    ----------
    row_ids, col_ids : Tensor
        1-D integer tensors of global row indices.
    group_size : int
        Rows per group (``centers_per_class``); 1 for plain rows.
    upper : bool
        If True, keep only pairs whose column group is after the row group (each unordered pair
        once).

    Returns
    -------
    Tensor
        Boolean matrix of shape ``(len(row_ids), len(col_ids))``.
    """
    rg = (row_ids // group_size).unsqueeze(1)
    cg = (col_ids // group_size).unsqueeze(0)
    return cg > rg if upper else cg != rg


def default_block_size(rows: int, cols: int | None = None) -> int:
    """Rows per block: a block of the pair matrix holds at most about 2M entries, and there are
    about 8 blocks or more unless that would make blocks shorter than 64 rows."""
    cols = rows if cols is None else cols
    by_memory = max(1, _BLOCK_ELEMENTS // max(cols, 1))
    by_count = max(64, -(-rows // _MIN_BLOCKS))
    return max(1, min(rows, by_memory, by_count))


def _row_block_skewed_mean(
    xb: Tensor,
    x: Tensor,
    start: int,
    pair_value: Callable[[Tensor, Tensor], Tensor],
    lam: float,
    group_size: int,
) -> Tensor:
    rows = torch.arange(start, start + xb.shape[0], device=x.device)
    cols = torch.arange(x.shape[0], device=x.device)
    values = pair_value(xb, x)
    return skewed_mean(values, lam, dim=1, mask=pair_mask(rows, cols, group_size))


def row_skewed_means(
    x: Tensor,
    pair_value: Callable[[Tensor, Tensor], Tensor],
    lam: float,
    group_size: int = 1,
    block_size: int | None = None,
) -> Tensor:
    """Per row ``i``, the skewed mean of ``pair_value(x_i, x_j)`` over rows ``j`` of other groups.

    Works for any pair function (a PML distance module, for instance). Row blocks are
    gradient-checkpointed, so memory stays O(block_size x rows) in the forward and the backward,
    at the price of computing each block's pair matrix twice.

    Parameters
    ----------
    x : Tensor
        Rows, shape ``(R, D)``.
    pair_value : callable
        ``pair_value(query, ref)`` returns the ``(len(query), len(ref))`` matrix of pair values.
    lam : float
        Skew of the skewed mean (finite).
    group_size : int
        Rows per group; pairs within a group are skipped (see :func:`pair_mask`).
    block_size : int, optional
        Rows per block; :func:`default_block_size` by default.

    Returns
    -------
    Tensor
        Shape ``(R,)``. Every row has the same number of partners, ``R - group_size``, so the
        skewed mean of this vector (same ``lam``) is the skewed mean over all pairs.
    """
    lam = _check_lam(lam, allow_inf=False)
    n = x.shape[0]
    block = block_size or default_block_size(n)
    out = []
    for start in range(0, n, block):
        xb = x[start : start + block]
        args = (xb, x, start, pair_value, lam, group_size)
        if torch.is_grad_enabled() and x.requires_grad:
            out.append(checkpoint(_row_block_skewed_mean, *args, use_reentrant=False))
        else:
            out.append(_row_block_skewed_mean(*args))
    return torch.cat(out)


def _gram_transform(
    s: Tensor, transform: GramTransform, power: float
) -> tuple[Tensor, Tensor | None]:
    """Pair value and its derivative with respect to the inner product ``s``."""
    if transform == "similarity":
        return s, None
    eps = torch.finfo(s.dtype).eps
    sq = (2.0 - 2.0 * s).clamp_min(eps)  # squared distance between unit rows, never 0
    value = -(sq ** (power / 2))
    deriv = (power * sq ** (power / 2 - 1)).masked_fill(sq <= eps, 0.0)
    return value, deriv


class _GramPairwiseSkewedMean(torch.autograd.Function):
    """Streaming skewed mean over the upper triangle of ``g(U U^T)``.

    Forward: per row block, one product for the block's similarities against the rows after it and,
    when a gradient is needed, two products (rows and columns) that accumulate the gradient with an
    online rescaling by the running maximum. Backward: one scaling of that accumulator.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        u: Tensor,
        lam: float,
        group_size: int,
        transform: GramTransform,
        power: float,
        block_size: int,
    ) -> Tensor:
        n = u.shape[0]
        ids = torch.arange(n, device=u.device)
        need_grad = ctx.needs_input_grad[0]
        acc = torch.zeros_like(u) if need_grad else None
        running_max = -math.inf  # of lam * value, over pairs seen so far
        total = 0.0  # sum of exp(lam * value - running_max), in float64
        value_sum = 0.0  # only used at lam == 0
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            ub, uc = u[start:stop], u[start:]
            valid = pair_mask(ids[start:stop], ids[start:], group_size, upper=True)
            if not bool(valid.any()):
                continue
            # the block's temporaries are reused in place: memory is a few block-sized buffers
            values, deriv = _gram_transform(ub @ uc.T, transform, power)
            if lam == 0.0:
                weights = valid.to(u.dtype)
                value_sum += float(values.masked_fill_(~valid, 0).sum(dtype=torch.float64))
            else:
                z = values.mul_(lam).masked_fill_(~valid, -math.inf)
                block_max = float(z.max())
                if block_max > running_max:
                    rescale = math.exp(running_max - block_max)
                    total *= rescale
                    if acc is not None:
                        acc.mul_(rescale)
                    running_max = block_max
                weights = z.sub_(running_max).exp_()
            total += float(weights.sum(dtype=torch.float64))
            if acc is not None:
                w = weights if deriv is None else weights.mul_(deriv)
                acc[start:stop].addmm_(w, uc)  # in place: no rows x D temporary
                acc[start:].addmm_(w.T, ub)
        num_pairs = _num_upper_pairs(n, group_size)
        if lam == 0.0:
            value = value_sum / num_pairs
        else:
            value = running_max / lam + math.log(total / num_pairs) / lam
        if acc is not None:
            ctx.save_for_backward(acc.div_(total))
        return torch.tensor(value, dtype=u.dtype, device=u.device)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (grad_u,) = ctx.saved_tensors
        return grad_output * grad_u, None, None, None, None, None


def _num_upper_pairs(rows: int, group_size: int) -> int:
    groups = rows // group_size
    return groups * (groups - 1) // 2 * group_size * group_size


def gram_pairwise_skewed_mean(
    u: Tensor,
    lam: float,
    group_size: int = 1,
    transform: GramTransform = "similarity",
    power: float = 1.0,
    block_size: int | None = None,
) -> Tensor:
    """Skewed mean over unordered pairs of rows of a function of their inner products.

    With :math:`s_{ij} = u_i \\cdot u_j` and pairs :math:`i < j` in different groups, returns
    :math:`\\mathrm{SM}_\\lambda(g(s_{ij}))` where :math:`g` is

    - ``"similarity"``: :math:`g(s) = s` (cosine similarity when the rows are unit vectors);
    - ``"neg_chord"``: :math:`g(s) = -(2 - 2s)^{p/2}`, minus the Euclidean distance between unit
      rows raised to ``power`` :math:`p` (the squared distance is clamped at machine epsilon, and
      its derivative is zero there, so coincident rows never take a square root of 0).

    Memory is O(block_size x rows + rows x D): the pair matrix is never stored. Time is about
    1.5 full ``R x R x D`` products (the triangle once for values, twice for the gradient).

    Parameters
    ----------
    u : Tensor
        Rows, shape ``(R, D)``; unit rows for ``"neg_chord"``.
    lam : float
        Finite skew; 0 gives the arithmetic mean.
    group_size : int
        Rows per group; pairs inside a group are skipped.
    transform : {"similarity", "neg_chord"}
        The pair function :math:`g`.
    power : float
        Exponent :math:`p` of the distance for ``"neg_chord"``.
    block_size : int, optional
        Rows per block; :func:`default_block_size` by default.

    Returns
    -------
    Tensor
        0-dim tensor in ``u``'s dtype, differentiable with respect to ``u``.
    """
    lam = _check_lam(lam, allow_inf=False)
    if transform not in ("similarity", "neg_chord"):
        raise ValueError(f"transform must be 'similarity' or 'neg_chord', got {transform!r}")
    block = block_size or default_block_size(u.shape[0])
    return _GramPairwiseSkewedMean.apply(u, lam, group_size, transform, float(power), block)


@torch.no_grad()
def pairwise_cosine_stats(
    x: Tensor, group_size: int = 1, block_size: int | None = None
) -> tuple[float, float]:
    """Largest and mean cosine similarity over pairs of rows in different groups.

    The mean uses the O(R x D) identity
    :math:`\\sum_{i \\ne j} s_{ij} = \\lVert\\sum_i u_i\\rVert^2 - \\sum_i \\lVert u_i\\rVert^2`
    per group; the largest needs the pair matrix and streams it in row blocks.

    Returns
    -------
    (float, float)
        ``(max_similarity, mean_similarity)``.
    """
    u = torch.nn.functional.normalize(at_least_float32(x), dim=1)
    n = u.shape[0]
    groups = u.view(n // group_size, group_size, -1).sum(dim=1)
    within = groups.pow(2).sum() - u.pow(2).sum()
    total = u.sum(dim=0).pow(2).sum() - u.pow(2).sum()
    mean = float((total - within) / (2 * _num_upper_pairs(n, group_size)))
    ids = torch.arange(n, device=u.device)
    best = -math.inf
    block = block_size or default_block_size(n)
    for start in range(0, n, block):
        valid = pair_mask(ids[start : start + block], ids[start:], group_size, upper=True)
        if bool(valid.any()):
            s = (u[start : start + block] @ u[start:].T).masked_fill(~valid, -math.inf)
            best = max(best, float(s.max()))
    return best, mean


# Jacobian-determinant regularizer ----------------------------------------------------------------


# DVML --------------------------------------------------------------------------------------------
