"""DVML miner: tuples with real anchors and draw-aligned synthetic positives and negatives."""

from __future__ import annotations

import torch
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from .. import functional as F
from .._checks import check_finite

Tuples = tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, Tensor]


class DVMLMiner(BaseMiner):
    """Mines over a real batch and its synthetic samples, one draw at a time, with real anchors.

    The query (``embeddings``) is the real batch, :math:`z_{I,i}` for :math:`i = 1..B`; the
    reference set (``ref_emb``) holds :math:`T` synthetic samples per real row, source-major: row
    ``i * T + t`` is draw ``t`` of row ``i`` and carries its label (the layout of
    :meth:`~pml_regularizers.DVMLEmbedder.sample`). For each draw :math:`t` the wrapped PML miner
    runs with the real rows as anchors and the draw-:math:`t` synthetic batch
    :math:`\\{\\hat z_{j,t}\\}_j` as references; its tuples are mapped to rows of ``ref_emb`` and
    concatenated over draws. Every tuple thus has

    - a real anchor :math:`a` (an index into ``embeddings``);
    - positives and negatives that are synthetic samples of one draw index :math:`t`, never
      mixing draws, as in the paper's metric loss on a synthetic batch
      :math:`L_m(\\{\\hat z_{j,t}\\}_j)`, whose one side is replaced by the real center;
    - with ``exclude_own_samples`` (default), no positive drawn from the anchor itself, so the
      pairs are exactly the paper's pairs :math:`(i, j \\ne i)` of one synthetic batch.

    A plain PML miner given the same query and reference set cannot do this: it does not know
    which reference rows are draws of which source, so it can neither keep tuples inside one draw
    nor leave out the anchor's own draws. It would also enumerate triplets over all :math:`TB`
    references at once, :math:`B (TB)^2` candidates, :math:`T` times more than the
    :math:`T B^3` enumerated here, and memory that grows the same way.

    Source: Lin et al., "Deep Variational Metric Learning", ECCV 2018, which applies the metric
    loss to synthetic samples but does not publish how tuples are formed; real anchors and
    draw-aligned tuples are this project's reconstruction.

    Parameters
    ----------
    miner : BaseMiner, optional
        The PML miner run on each draw (``MultiSimilarityMiner``, ``TripletMarginMiner``, ...).
        ``None``: every draw-aligned triplet (see
        :func:`~pml_regularizers.functional.draw_aligned_triplets`); pair losses receive them as
        pairs, each pair once per triplet it belongs to, a uniform repetition in batches with the
        same number of samples per class.
    exclude_own_samples : bool
        Drop positives that are draws of the anchor itself (default True). The inner miner still
        sees them; they are removed from its output.
    **kwargs
        ``collect_stats`` (and ``distance``, unused: the inner miner measures), as for every PML
        miner.

    Notes
    -----
    - Call it as ``miner(real, labels, synthetic, synthetic_labels)`` and pass the tuples to a
      PML loss as ``loss(real, labels, tuples, synthetic, synthetic_labels)``: anchors index the
      query, positives and negatives the reference set, PML's ``ref_emb`` convention.
    - :math:`T` is ``len(ref_emb) // len(embeddings)``. The source-major layout survives
      concatenation, so ``DistributedMinerWrapper(DVMLMiner(...))`` (``efficient=False``) with
      ``DistributedLossWrapper`` works across processes; ``efficient=True`` passes a local query
      against a gathered reference set, which breaks the layout and is rejected.
    - Stats (with ``collect_stats=True``): PML's ``num_triplets`` or ``num_pos_pairs`` and
      ``num_neg_pairs``, summed over draws, and ``num_own_samples_removed``.
    """

    def __init__(self, miner: BaseMiner | None = None, exclude_own_samples: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if miner is not None and not isinstance(miner, BaseMiner):
            raise ValueError(
                f"miner must be a PML BaseMiner or None, got {type(miner).__name__} (wrap the "
                "DVMLMiner itself in DistributedMinerWrapper, not its inner miner)"
            )
        if isinstance(miner, DVMLMiner):
            raise ValueError("miner must be a plain PML miner, got a DVMLMiner")
        if not isinstance(exclude_own_samples, bool):
            raise ValueError(f"exclude_own_samples must be a bool, got {exclude_own_samples!r}")
        self.miner = miner
        self.exclude_own_samples = exclude_own_samples
        self.add_to_recordable_attributes(name="exclude_own_samples", is_stat=False)
        self.add_to_recordable_attributes(name="num_own_samples_removed", is_stat=True)

    def mine(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor) -> Tuples:
        num_samples = self._check_layout(embeddings, labels, ref_emb, ref_labels)
        check_finite(type(self).__name__, {"embeddings": embeddings, "ref_emb": ref_emb})
        if self.miner is None:
            return F.draw_aligned_triplets(labels, num_samples, self.exclude_own_samples)
        rows, dim = embeddings.shape
        draws = ref_emb.reshape(rows, num_samples, dim)
        # a separate labels tensor per draw: PML drops the "diagonal" when ref_labels *is* labels,
        # and the draw's own samples must stay ordinary references to the inner miner
        draw_labels = ref_labels.reshape(rows, num_samples)
        removed = 0
        per_draw = []
        for t in range(num_samples):
            tuples = self.miner(embeddings, labels, draws[:, t], draw_labels[:, t])
            if self.exclude_own_samples:
                tuples, dropped = _drop_own_positives(tuples)
                removed += dropped
            per_draw.append(_to_reference_rows(tuples, num_samples, t))
        if self.collect_stats:
            self.num_own_samples_removed = removed
        return tuple(torch.cat(parts) for parts in zip(*per_draw))  # type: ignore[return-value]

    def _check_layout(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor) -> int:
        if ref_emb is embeddings:
            raise ValueError(
                "DVMLMiner needs the synthetic samples as ref_emb: call "
                "miner(real, labels, synthetic, synthetic_labels)"
            )
        rows, total = embeddings.shape[0], ref_emb.shape[0]
        if rows == 0 or total == 0 or total % rows != 0:
            raise ValueError(
                f"ref_emb must hold T >= 1 synthetic samples per real row: {total} reference rows for {rows} real rows"
            )
        if ref_emb.shape[1:] != embeddings.shape[1:]:
            raise ValueError(
                f"ref_emb rows must have the embeddings' width {embeddings.shape[1]}, got {ref_emb.shape[1]}"
            )
        num_samples = total // rows
        if not torch.equal(ref_labels, labels.repeat_interleave(num_samples)):
            raise ValueError(
                "ref_labels must be labels.repeat_interleave(T): synthetic row i * T + t is a draw "
                "of real row i and carries its label (a DistributedMinerWrapper with "
                "efficient=True breaks this layout; use efficient=False)"
            )
        return num_samples


def _drop_own_positives(tuples: Tuples) -> tuple[Tuples, int]:
    """Remove positives whose reference index is the anchor's own (a draw of the anchor)."""
    keep = tuples[0] != tuples[1]
    dropped = int((~keep).sum())
    if len(tuples) == 3:
        return (tuples[0][keep], tuples[1][keep], tuples[2][keep]), dropped
    return (tuples[0][keep], tuples[1][keep], tuples[2], tuples[3]), dropped


def _to_reference_rows(tuples: Tuples, num_samples: int, draw: int) -> Tuples:
    """Map reference indices ``j`` into one draw's batch to rows ``j * T + draw`` of ``ref_emb``."""
    if len(tuples) == 3:
        a, p, n = tuples
        return a, p * num_samples + draw, n * num_samples + draw
    a1, p, a2, n = tuples
    return a1, p * num_samples + draw, a2, n * num_samples + draw
