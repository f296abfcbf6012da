# How much does a trained flow metric layer change volume? A look inside finished flow experiments.
#
# For every finished fold of the given experiments (folders made by
# pml-bench with embedder=flow), it loads the fold's tested models, embeds the fold's own training
# classes (the test classes are not used) and measures, per image, the log|det J| of the flow's
# coupling blocks (the term JacobianDeterminantRegularizer penalises):
#   - its mean, standard deviation, minimum and maximum over the images;
#   - exp(log|det J| / D), the geometric mean of the Jacobian's singular values: 1 for a
#     volume-preserving map, below 1 where the flow contracts;
#   - the largest and the smallest singular value of J (the flow's local Lipschitz constant and that
#     of its inverse), from the full D x D Jacobian of each image (torch.func, O(D^3) per image);
#   - ||f(h)|| / ||h||, how the flow changes the length of its input h (the projected trunk feature).
# log|det J| fixes only the geometric mean of the singular values: a flow can keep it at 0 and still
# stretch some directions and squeeze others, which the extreme singular values show.
# Bare flows log no log-determinant while they train, so this is how their volume change is seen.
#
# Run (on the flow-depth follow-up's experiments, see docs/results.md):
#     .venv/bin/python -m experiments.flow_volume \
#         runs/followup/jacobian_determinant_flow_depth2_validation-omniglot-d32-baseline \
#         runs/followup/jacobian_determinant_flow_depth2_validation-omniglot-d32-method \
#         --out docs/results/jacobian_determinant_flow_volume-omniglot-d32
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.func import jacrev, vmap

from experiments.trained_folds import measure_folds, report_main
from pml_regularizers import FlowEmbedder

ROWS_PER_JACOBIAN_BATCH = 256  # bounds the memory of the batched Jacobians: 256 x D x D

NOTE = (
    "log-det: log|det J| of the flow's coupling blocks for each image. Singular-value geometric mean: "
    "exp(log-det / D), 1 for a volume-preserving flow. Largest and smallest singular value: of each image's "
    "Jacobian, averaged over the images. Norm ratio: ||f(h)|| / ||h||, h the flow's input "
    "(the projected trunk feature)."
)


@torch.no_grad()
def volume_change(flow: FlowEmbedder, features: torch.Tensor) -> dict[str, float]:
    """Volume and length change of ``flow`` on the trunk ``features`` (shape ``(N, in_features)``).

    Returns the mean, standard deviation, minimum and maximum over the rows of
    :math:`\\ell = \\log|\\det J_f(h)|`, the mean of :math:`\\exp(\\ell / D)` and the mean of
    :math:`\\lVert f(h) \\rVert / \\lVert h \\rVert`, and the means of the largest and the smallest
    singular value of :math:`J_f(h)`, where :math:`h` is the row after the flow's projection and
    :math:`D` the embedding size.
    """
    if not isinstance(flow, FlowEmbedder):
        raise TypeError(f"flow must be a FlowEmbedder, got {type(flow).__name__}")
    h = features if flow.projection is None else flow.projection(features)
    z, logdet = flow.forward_and_logdet(features)
    logdet = logdet.double()
    transform = flow.transform()
    singular = torch.cat(
        [torch.linalg.svdvals(vmap(jacrev(transform))(chunk).double()) for chunk in h.split(ROWS_PER_JACOBIAN_BATCH)]
    )
    return {
        "log-det mean": float(logdet.mean()),
        "log-det std": float(logdet.std()) if len(logdet) > 1 else math.nan,
        "log-det min": float(logdet.min()),
        "log-det max": float(logdet.max()),
        "singular-value geometric mean": float(torch.exp(logdet / flow.out_features).mean()),
        "largest singular value": float(singular[:, 0].mean()),
        "smallest singular value": float(singular[:, -1].mean()),
        "norm ratio": float((z.double().norm(dim=1) / h.double().norm(dim=1)).mean()),
    }


def experiment_volume(exp_dir: Path) -> tuple[dict[str, list[float]], int]:
    """:func:`volume_change` for every finished fold of ``exp_dir``: each figure's values, and the count."""
    return measure_folds(exp_dir, "flow", "flow", lambda flow, features, labels: volume_change(flow, features))


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "experiments.flow_volume",
        "Volume change of trained flow metric layers, from finished experiments",
        "flow (embedder=flow)",
        "How much the trained flows change volume",
        experiment_volume,
        NOTE,
    )


if __name__ == "__main__":
    raise SystemExit(main())
