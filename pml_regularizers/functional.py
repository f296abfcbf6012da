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

from ._arguments import check_num_samples, is_positive_int

__all__ = [
    "at_least_float32",
    "max_scaled_rows",
    "skewed_mean",
    "pair_mask",
    "default_block_size",
    "row_skewed_means",
    "gram_pairwise_skewed_mean",
    "pairwise_cosine_stats",
    "logdet_penalty",
    "same_class_interpolation",
    "gaussian_kl_to_standard_normal",
    "reparameterized_samples",
    "reconstruction_error",
    "draw_aligned_triplets",
]

GramTransform = Literal["similarity", "neg_chord"]

_BLOCK_ELEMENTS = 1 << 21  # about 2M entries (8 MB in float32) per row block of a pair matrix
_MIN_BLOCKS = 8  # enough blocks for the triangle-only kernel to skip most of the lower half


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 or bfloat16, else unchanged: the compute dtype of the
    pair computations, whose exponentials and sums overflow or lose precision in half types."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def max_scaled_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` divided by their largest magnitude (zero rows stay zero).

    The directions are unchanged and every non-zero row's norm lies in :math:`[1, \\sqrt{D}]`, so
    an L2 normalisation after it neither overflows (rows above about :math:`10^{19}` in float32,
    whose squares are infinite) nor underflows (rows below about :math:`10^{-19}`, whose squares
    are 0) for any finite input. The scale is detached: a normalised row does not depend on it,
    so the gradient through the normalisation is unchanged.
    """
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return x / scale


def _check_lam(lam: float, allow_inf: bool) -> float:
    lam = float(lam)
    if math.isnan(lam) or (not allow_inf and math.isinf(lam)):
        expected = "a real number (inf allowed)" if allow_inf else "a finite real number"
        raise ValueError(f"lam must be {expected}, got {lam}")
    return lam


def _representable_lam(lam: float, dtype: torch.dtype) -> float:
    """``lam`` with its magnitude capped at ``dtype``'s largest number.

    A larger one would become infinite in ``dtype``, and ``inf * 0`` at the extreme entry is NaN;
    the skewed mean at the cap is within :math:`\\log(N) / |\\lambda|` of the extreme, far below
    ``dtype``'s resolution, as it is at ``lam`` itself."""
    return math.copysign(min(abs(lam), torch.finfo(dtype).max), lam)


def _check_grouped_rows(x: Tensor, group_size: int, block_size: int | None, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is ``(R, D)`` with ``R`` a multiple of ``group_size`` and at least
    two groups (so that pairs of different groups exist), and ``block_size`` is None or an int >= 1."""
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D tensor of shape (rows, dim), got {shape}")
    if not is_positive_int(group_size):
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    rows = x.shape[0]
    if rows % group_size != 0 or rows // group_size < 2:
        raise ValueError(
            f"the rows of {name} ({rows}) must be a multiple of group_size ({group_size}) and hold at least 2 groups"
        )
    if block_size is not None and not is_positive_int(block_size):
        raise ValueError(f"block_size must be an int >= 1 or None, got {block_size!r}")


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
        The skewed mean, in ``x``'s dtype (computed in float32 for float16 and bfloat16).

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
    out_dtype, x = x.dtype, at_least_float32(x)  # half types: counts and sums overflow at 65504
    count = mask.sum(dim=dims, keepdim=True).to(x.dtype)
    if bool((count == 0).any()):
        raise ValueError("mask leaves no entry in some reduced slice")

    def finish(value: Tensor) -> Tensor:
        return (value if keepdim else value.squeeze(dims)).to(out_dtype)

    tiny = torch.finfo(x.dtype).tiny
    if abs(lam) < math.sqrt(tiny):  # lam * (x - m) would be subnormal: SM_lam = mean to resolution
        return finish(x.masked_fill(~mask, 0).sum(dim=dims, keepdim=True) / count)
    fill = -math.inf if lam > 0 else math.inf
    extreme = x.masked_fill(~mask, fill)
    extreme = extreme.amax(dim=dims, keepdim=True) if lam > 0 else extreme.amin(dim=dims, keepdim=True)
    if math.isinf(lam):
        return finish(extreme)
    lam = _representable_lam(lam, x.dtype)
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
    if not is_positive_int(group_size):
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
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
        Rows, shape ``(R, D)``, with ``R`` a multiple of ``group_size`` and at least two groups.
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
    _check_grouped_rows(x, group_size, block_size)
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


def _gram_transform(s: Tensor, transform: GramTransform, power: float) -> tuple[Tensor, Tensor | None]:
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
    online rescaling by the running maximum. Backward: one scaling of that accumulator, which has
    no derivative itself: a backward with ``create_graph=True`` raises instead of silently
    leaving this term out of the second derivative.

    With :math:`m` the running extreme of the pair values :math:`g` (the maximum for
    :math:`\\lambda > 0`, the minimum for :math:`\\lambda < 0`) and :math:`z = \\lambda (g - m)
    \\le 0`, so that nothing overflows for any representable :math:`\\lambda`, two sums are kept in
    float64 (of each block's row sums, taken in the block's dtype): :math:`\\sum e^{z}` and
    :math:`\\sum (e^{z} - 1)` (``expm1``, exact for :math:`z` near 0). The mean of the first is
    :math:`t \\in [1/N, 1]`; the value is :math:`m + \\log(t) / \\lambda`, with
    :math:`\\log t` taken as ``log1p`` of the second sum's mean when :math:`t > 1/2`, as
    :func:`skewed_mean` does. Without the second sum, :math:`t` rounds to 1 when
    :math:`|\\lambda|` is small and the value jumps from the mean to the extreme. When the extreme
    moves so that :math:`z` at the old one becomes :math:`-\\delta`, the sums over the :math:`n`
    pairs seen so far become :math:`r S` and :math:`r S_1 + n (r - 1)`, with
    :math:`r = e^{-\\delta}`. Pairs outside a block's first ``rows + group_size`` columns all
    count, so only those leading columns are masked.
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
        running_ext = None  # of the values (max for lam > 0, min for lam < 0), over pairs seen
        total = 0.0  # sum of exp(lam * (value - running_ext)), in float64
        total_m1 = 0.0  # sum of expm1(lam * (value - running_ext)), in float64
        seen = 0  # pairs summed so far
        value_sum = 0.0  # only used at lam == 0
        fill = -math.inf if lam > 0 else math.inf  # masked values never become the extreme
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            ub, uc = u[start:stop], u[start:]
            # pairs outside the leading columns are all valid: only the head needs a mask
            head = min(len(uc), stop - start + group_size)
            invalid = ~pair_mask(ids[start:stop], ids[start : start + head], group_size, upper=True)
            count = len(ub) * len(uc) - int(invalid.sum())
            if count == 0:
                continue
            # the block's temporaries are reused in place: memory is a few block-sized buffers
            values, deriv = _gram_transform(ub @ uc.T, transform, power)
            if lam == 0.0:
                values[:, :head].masked_fill_(invalid, 0)
                value_sum += float(values.sum(dtype=torch.float64))
                weights = torch.ones_like(values)
                weights[:, :head].masked_fill_(invalid, 0)
            else:
                values[:, :head].masked_fill_(invalid, fill)
                block_ext = float(values.max() if lam > 0 else values.min())
                if running_ext is None or lam * (block_ext - running_ext) > 0:
                    # lam * (old - new extreme) <= 0; -inf for the first block
                    delta = -math.inf if running_ext is None else lam * (running_ext - block_ext)
                    rescale = math.exp(delta)
                    total *= rescale
                    total_m1 = total_m1 * rescale + seen * math.expm1(delta)
                    if acc is not None:
                        acc.mul_(rescale)
                    running_ext = block_ext
                z = values.sub_(running_ext).mul_(lam)  # <= 0: masked entries -inf, none +inf
                m1 = torch.expm1(z)
                m1[:, :head].masked_fill_(invalid, 0)
                total_m1 += float(m1.sum(dim=1).sum(dtype=torch.float64))
                del m1
                weights = z.exp_()
            total += float(weights.sum(dim=1).sum(dtype=torch.float64))
            seen += count
            if acc is not None:
                w = weights if deriv is None else weights.mul_(deriv)
                acc[start:stop].addmm_(w, uc)  # in place: no rows x D temporary
                acc[start:].addmm_(w.T, ub)
        if lam == 0.0:
            value = value_sum / seen
        else:
            t = total / seen
            log_t = math.log1p(total_m1 / seen) if t > 0.5 else math.log(t)
            assert running_ext is not None  # set by the first block with pairs (seen > 0 here)
            value = running_ext + log_t / lam
        if acc is not None:
            ctx.save_for_backward(acc.div_(total))
        return torch.tensor(value, dtype=u.dtype, device=u.device)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # autograd runs backward in grad mode only for create_graph=True
            raise RuntimeError(
                "gram_pairwise_skewed_mean has no second derivative (its backward scales a gradient "
                "accumulated in the forward pass), so it cannot be differentiated with "
                "create_graph=True; for higher derivatives use skewed_mean on the explicit pair values"
            )
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
        Rows, shape ``(R, D)``, with ``R`` a multiple of ``group_size`` and at least two groups;
        unit rows for ``"neg_chord"``.
    lam : float
        Finite skew; 0 gives the arithmetic mean, and the value tends to it continuously as
        :math:`\\lambda \\to 0` (see :class:`_GramPairwiseSkewedMean` for how small
        :math:`|\\lambda|` keeps its precision).
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
        0-dim tensor in ``u``'s dtype (computed in float32 for float16 and bfloat16),
        differentiable with respect to ``u``.
    """
    lam = _check_lam(lam, allow_inf=False)
    _check_grouped_rows(u, group_size, block_size, "u")
    if transform not in ("similarity", "neg_chord"):
        raise ValueError(f"transform must be 'similarity' or 'neg_chord', got {transform!r}")
    if not u.is_floating_point():
        raise ValueError(f"u must be a floating-point tensor, got dtype {u.dtype}")
    block = block_size or default_block_size(u.shape[0])
    uc = at_least_float32(u)
    if abs(lam) < math.sqrt(torch.finfo(uc.dtype).tiny):  # as in skewed_mean: the mean to resolution
        lam = 0.0
    lam = _representable_lam(lam, uc.dtype)
    value = _GramPairwiseSkewedMean.apply(uc, lam, group_size, transform, float(power), block)
    return value.to(u.dtype)


@torch.no_grad()
def pairwise_cosine_stats(x: Tensor, group_size: int = 1, block_size: int | None = None) -> tuple[float, float]:
    """Largest and mean cosine similarity over pairs of rows in different groups.

    The mean uses the O(R x D) identity
    :math:`\\sum_{i \\ne j} s_{ij} = \\lVert\\sum_i u_i\\rVert^2 - \\sum_i \\lVert u_i\\rVert^2`
    per group; the largest needs the pair matrix and streams it in row blocks.

    Parameters
    ----------
    x : Tensor
        Rows, shape ``(R, D)``, with ``R`` a multiple of ``group_size`` and at least two groups.
    group_size : int
        Rows per group; pairs inside a group are skipped.
    block_size : int, optional
        Rows per block of the streamed maximum; :func:`default_block_size` by default.

    Returns
    -------
    (float, float)
        ``(max_similarity, mean_similarity)``.
    """
    _check_grouped_rows(x, group_size, block_size)
    u = torch.nn.functional.normalize(max_scaled_rows(at_least_float32(x)), dim=1)
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

LogdetPenalty = Literal["signed", "square", "hinge"]
LOGDET_PENALTIES: tuple[str, ...] = ("signed", "square", "hinge")


def logdet_penalty(logdet: Tensor, penalty: LogdetPenalty, target: float = 0.0) -> Tensor:
    """Per-sample penalty on log-determinants :math:`\\ell_b = \\log|\\det J_f(h_b)|`.

    With :math:`r_b = \\ell_b - \\tau` for the target :math:`\\tau`,

    .. math::

        \\text{signed: } r_b, \\qquad \\text{square: } r_b^2, \\qquad
        \\text{hinge: } \\max(r_b, 0).

    ``"signed"`` lowers every log-determinant, with no floor but the flow's own bound (its
    soft-clamped scales); ``"square"`` pulls each one to the target; ``"hinge"`` penalises only
    log-determinants above the target, so shrinking below it earns nothing.

    Parameters
    ----------
    logdet : Tensor
        Log-determinants, any shape.
    penalty : {"signed", "square", "hinge"}
        The form.
    target : float
        The target :math:`\\tau` (for ``"signed"`` a constant shift).

    Returns
    -------
    Tensor
        Same shape and dtype as ``logdet``.
    """
    if penalty not in LOGDET_PENALTIES:
        raise ValueError(f"penalty must be one of {LOGDET_PENALTIES}, got {penalty!r}")
    r = logdet - target
    if penalty == "square":
        return r.square()
    if penalty == "hinge":
        return torch.relu(r)
    return r


def same_class_interpolation(h: Tensor, labels: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """One point between each sample and another sample of its class, drawn at random.

    .. math::

        \\tilde h_i = h_i + \\varepsilon\\, u_i\\, (h_{j(i)} - h_i), \\qquad
        u_i \\sim U(0, 1),

    with :math:`j(i)` drawn uniformly among the other samples that share the label of sample
    :math:`i`. A sample with no such partner gets :math:`\\tilde h_i = h_i` and ``False`` in the
    returned mask. Draws use torch's global random generator on ``h``'s device, so
    ``torch.manual_seed`` makes them repeatable.

    Parameters
    ----------
    h : Tensor
        Features, shape ``(N, D)``; gradients flow through the returned points.
    labels : Tensor
        Integer labels, shape ``(N,)``.
    eps : float
        The step :math:`\\varepsilon`; 1 draws points anywhere on the segment.

    Returns
    -------
    (Tensor, Tensor)
        The points, shape ``(N, D)`` in ``h``'s dtype, and the boolean mask ``(N,)`` of samples
        that have a partner.
    """
    if h.ndim != 2:
        raise ValueError(f"h must be 2-D with shape (N, D), got shape {tuple(h.shape)}")
    if labels.ndim != 1 or labels.shape[0] != h.shape[0]:
        raise ValueError(f"labels must have shape ({h.shape[0]},) to match h, got shape {tuple(labels.shape)}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    n = h.shape[0]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same.fill_diagonal_(False)
    has_partner = same.any(dim=1)
    scores = torch.rand(n, n, device=h.device).masked_fill_(~same, -1.0)
    partner = torch.where(has_partner, scores.argmax(dim=1), torch.arange(n, device=h.device))
    u = (eps * torch.rand(n, 1, device=h.device)).to(h.dtype)
    return h + u * (h[partner] - h), has_partner


# DVML --------------------------------------------------------------------------------------------


def gaussian_kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-row KL divergence from :math:`\\mathcal N(\\mu, \\mathrm{diag}\\,\\sigma^2)` to
    :math:`\\mathcal N(0, I)`.

    .. math::

        \\mathrm{KL}_i = \\frac{1}{2}\\sum_{d}\\big(\\mu_{id}^2 + \\sigma_{id}^2 - 1
            - \\log\\sigma_{id}^2\\big)

    Parameters
    ----------
    mu, logvar : Tensor
        Means and log-variances :math:`\\log\\sigma^2`, same shape ``(..., D)``.

    Returns
    -------
    Tensor
        Shape ``(...)``: one divergence per row, summed over the last dimension.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def reparameterized_samples(
    center: Tensor,
    mu: Tensor,
    logvar: Tensor,
    num_samples: int,
    noise: Tensor | None = None,
) -> Tensor:
    """Draws :math:`\\hat z_{i,t} = c_i + \\mu_i + \\sigma_i \\odot \\epsilon_{i,t}`,
    :math:`\\epsilon_{i,t} \\sim \\mathcal N(0, I)`, differentiable in ``center``, ``mu`` and
    ``logvar``.

    Parameters
    ----------
    center, mu, logvar : Tensor
        Shape ``(B, D)`` each: the center :math:`c` (DVML's :math:`z_I`), the mean and the
        log-variance of the variation.
    num_samples : int
        Draws :math:`T \\ge 1` per row.
    noise : Tensor, optional
        The standard normal :math:`\\epsilon`, shape ``(B, T, D)``; drawn with ``torch.randn``
        (the global generator) when omitted.

    Returns
    -------
    Tensor
        Shape ``(B * T, D)``, source-major: row ``i * T + t`` is draw ``t`` of row ``i``.
    """
    check_num_samples(num_samples)
    if mu.ndim != 2:
        raise ValueError(f"mu must be 2-D with shape (B, D), got shape {tuple(mu.shape)}")
    for name, t in (("center", center), ("logvar", logvar)):
        if t.shape != mu.shape:
            raise ValueError(f"{name} must have mu's shape {tuple(mu.shape)}, got {tuple(t.shape)}")
    rows, dim = mu.shape
    if noise is None:
        noise = torch.randn(rows, num_samples, dim, dtype=mu.dtype, device=mu.device)
    elif noise.shape != (rows, num_samples, dim):
        raise ValueError(f"noise must have shape (B, T, D) = {(rows, num_samples, dim)}, got {tuple(noise.shape)}")
    elif noise.dtype != mu.dtype or noise.device != mu.device:
        raise ValueError(f"noise must be {mu.dtype} on {mu.device} like mu, got {noise.dtype} on {noise.device}")
    sigma = torch.exp(0.5 * logvar)
    samples = (center + mu).unsqueeze(1) + sigma.unsqueeze(1) * noise
    return samples.reshape(rows * num_samples, dim)


def reconstruction_error(target: Tensor, reconstruction: Tensor) -> Tensor:
    """Mean squared reconstruction error of ``T`` decoded draws per target row.

    .. math::

        L = \\frac{1}{TB}\\sum_{i=1}^{B}\\sum_{t=1}^{T}\\lVert x_i - \\hat x_{i,t}\\rVert^2

    Parameters
    ----------
    target : Tensor
        Shape ``(B, F)``: the rows :math:`x_i`.
    reconstruction : Tensor
        Shape ``(B * T, F)``, source-major (row ``i * T + t`` reconstructs ``x_i``).

    Returns
    -------
    Tensor
        0-dim: the squared error summed over features, averaged over the ``B * T`` rows.
    """
    if target.ndim != 2 or target.shape[0] == 0:
        raise ValueError(f"target must be 2-D with shape (B, F), B >= 1, got shape {tuple(target.shape)}")
    rows, features = target.shape
    if reconstruction.ndim != 2 or reconstruction.shape[1] != features or reconstruction.shape[0] % rows:
        raise ValueError(
            f"reconstruction must have shape (B * T, F) with B = {rows} and F = {features}, "
            f"got shape {tuple(reconstruction.shape)}"
        )
    decoded = reconstruction.reshape(rows, -1, features)
    return (decoded - target.unsqueeze(1)).pow(2).sum(dim=-1).mean()


def draw_aligned_triplets(labels: Tensor, num_samples: int, exclude_own: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Every triplet whose anchor is a real row and whose positive and negative are synthetic
    draws of the same index ``t``.

    Row ``i`` of the real batch has label ``labels[i]``; its draws are rows ``i * T + t`` of the
    synthetic batch (source-major, as :func:`reparameterized_samples` lays them out). A triplet
    :math:`(a, j T + t, k T + t)` needs ``labels[j] == labels[a] != labels[k]``, and
    :math:`j \\ne a` when ``exclude_own``.

    Parameters
    ----------
    labels : Tensor
        Shape ``(B,)``, the labels of the real rows (the draws carry their source's label).
    num_samples : int
        Draws :math:`T` per real row.
    exclude_own : bool
        Leave out positives drawn from the anchor itself.

    Returns
    -------
    (Tensor, Tensor, Tensor)
        Anchor indices into the real batch and positive and negative indices into the synthetic
        batch, draw-major (all triplets of draw 0 first).
    """
    check_num_samples(num_samples)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D with shape (B,), got shape {tuple(labels.shape)}")
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    positive = same.clone()
    if exclude_own:
        positive.fill_diagonal_(False)
    a, j, k = torch.where(positive.unsqueeze(2) & ~same.unsqueeze(1))
    draws = torch.arange(num_samples, device=labels.device).unsqueeze(1)
    return (
        a.repeat(num_samples),
        (j * num_samples + draws).reshape(-1),
        (k * num_samples + draws).reshape(-1),
    )
