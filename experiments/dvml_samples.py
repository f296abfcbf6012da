# Where do DVML's synthetic samples land? A look inside finished DVML experiments.
#
# For every finished fold of the given DVML experiments (folders made by
# pml-bench with embedder=dvml), it loads the fold's tested models, embeds the fold's own
# training classes (what the training loss saw; the test classes are not used) and measures:
#   - the size of the class-center embedding z_I and of the variation mu + sigma * eps that is added
#     to it, and the cosine between a synthetic sample z_I + mu + sigma * eps and its z_I;
#   - how often a sample's nearest class center (the mean of the class's unit z_I) is its own
#     class, for the real z_I and for the synthetic samples.
# The losses normalise embeddings, so only the ratio of the two sizes matters: when the variation
# is large against z_I, a synthetic sample points away from its class and the metric loss on it
# is mostly noise.
#
# Run (after the DVML evidence studies):
#     .venv/bin/python -m experiments.dvml_samples runs/evidence/dvml_triplet-omniglot-d32-method \
#         runs/evidence/dvml_multi_similarity-omniglot-d32-method --out docs/results/dvml_samples-omniglot-d32
from __future__ import annotations

from pathlib import Path

import torch

from experiments.trained_folds import measure_folds, report_main
from pml_regularizers import DVMLEmbedder

DRAWS = 20  # synthetic samples per real one, the paper's T


@torch.no_grad()
def sample_geometry(
    features: torch.Tensor, labels: torch.Tensor, embedder: DVMLEmbedder, generator: torch.Generator
) -> dict[str, float]:
    """Sizes and class agreement of real and synthetic embeddings of trunk ``features``.

    Returns the mean norm of z_I and of the added variation mu + sigma * eps, their ratio, the
    mean norm of mu and mean sigma, the mean cosine between a synthetic sample and its z_I, and the
    nearest-class-center accuracy of the real and of the synthetic embeddings (centers: class
    means of the unit z_I). ``DRAWS`` draws per row, taken from ``generator``.
    """
    invariant, mu, logvar = embedder.encode(features)
    noise = torch.randn(len(features), DRAWS, invariant.shape[1], generator=generator)
    samples = embedder.sample(invariant, mu, logvar, DRAWS, noise)
    variation = samples - invariant.repeat_interleave(DRAWS, dim=0)
    unit = torch.nn.functional.normalize(invariant, dim=1)
    classes = labels.unique()
    centers = torch.nn.functional.normalize(torch.stack([unit[labels == c].mean(0) for c in classes]), dim=1)

    def center_accuracy(z: torch.Tensor, y: torch.Tensor) -> float:
        nearest = classes[(torch.nn.functional.normalize(z, dim=1) @ centers.T).argmax(1)]
        return float((nearest == y).double().mean())

    cos = torch.nn.functional.cosine_similarity(samples, invariant.repeat_interleave(DRAWS, dim=0), dim=1)
    z_norm, v_norm = invariant.norm(dim=1).mean(), variation.norm(dim=1).mean()
    return {
        "z_I norm": float(z_norm),
        "variation norm": float(v_norm),
        "variation / z_I": float(v_norm / z_norm),
        "mu norm": float(mu.norm(dim=1).mean()),
        "sigma (mean)": float(torch.exp(0.5 * logvar).mean()),
        "cos(sample, z_I)": float(cos.mean()),
        "center accuracy, real": center_accuracy(invariant, labels),
        "center accuracy, synthetic": center_accuracy(samples, labels.repeat_interleave(DRAWS)),
    }


def experiment_geometry(exp_dir: Path) -> tuple[dict[str, list[float]], int]:
    """:func:`sample_geometry` for every finished fold of ``exp_dir``: each figure's values, and the count.
    The draws come from one generator per experiment, seeded 0."""
    generator = torch.Generator().manual_seed(0)
    return measure_folds(
        exp_dir,
        "dvml",
        "DVML",
        lambda embedder, features, labels: sample_geometry(features, labels, embedder, generator),
    )


NOTE = (
    f"{DRAWS} synthetic samples per image. Variation: mu + sigma * eps, what is added to z_I to make a "
    "synthetic sample. Center accuracy: how often the nearest class center (the class mean of the unit z_I) "
    "is the sample's own class."
)


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "experiments.dvml_samples",
        "Where DVML's synthetic samples land, from finished experiments",
        "DVML",
        "Where DVML's synthetic samples land",
        experiment_geometry,
        NOTE,
    )


if __name__ == "__main__":
    raise SystemExit(main())
