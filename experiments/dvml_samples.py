# Where do DVML's synthetic samples land? A look inside finished DVML experiments.
#
# For every finished fold of the given DVML experiments (folders made by experiments/evidence.py or
# pml-bench with embedder=dvml), it loads the fold's best checkpoint, embeds the fold's own
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
#     .venv/bin/python experiments/dvml_samples.py runs/evidence/dvml_triplet-omniglot-d32-method \
#         runs/evidence/dvml_multi_similarity-omniglot-d32-method --out docs/results/dvml_samples-omniglot-d32
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from evidence import script_command, val_score
from omegaconf import OmegaConf

from pml_regularizers import DVMLEmbedder
from pml_regularizers.bench.data import TensorImageDataset, class_disjoint_split, class_kfold
from pml_regularizers.bench.report import experiment_command, provenance_lines
from pml_regularizers.bench.runner import load_experiment_data

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


@torch.no_grad()
def experiment_geometry(exp_dir: Path) -> tuple[dict[str, list[float]], int]:
    """:func:`sample_geometry` for every finished fold of ``exp_dir``: each figure's values, and the count."""
    cfg = OmegaConf.load(exp_dir / "config.yaml")
    if cfg.choices.embedder != "dvml":
        raise ValueError(f"{exp_dir} is not a DVML experiment (embedder={cfg.choices.embedder})")
    data = load_experiment_data(cfg)
    train_classes, _ = class_disjoint_split(data.labels)
    folds = class_kfold(train_classes, cfg.cv_folds)
    values: dict[str, list[float]] = {}
    count = 0
    generator = torch.Generator().manual_seed(0)
    trunk = instantiate(cfg.trunk).eval()
    embedder = instantiate(cfg.embedder, in_features=trunk.output_size, out_features=cfg.embedding_size)
    for checkpoint in sorted(exp_dir.glob("seed_*/fold_*/checkpoint_best.pt")):
        fold = int(checkpoint.parent.name.split("_")[1])
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
        trunk.load_state_dict(payload["models"]["trunk"])
        embedder.load_state_dict(payload["models"]["embedder"])
        loader = torch.utils.data.DataLoader(TensorImageDataset(data.subset(folds[fold][0]), augment=False), batch_size=256)
        features, labels = zip(*((trunk(x), y) for x, y in loader))
        for k, v in sample_geometry(torch.cat(features), torch.cat(labels), embedder, generator).items():
            values.setdefault(k, []).append(v)
        count += 1
    if not count:
        raise FileNotFoundError(f"no finished fold (seed_*/fold_*/checkpoint_best.pt) in {exp_dir}")
    return values, count


def validation_score(exp_dir: Path) -> str:
    """Mean validation MAP@R over the seeds of a finished experiment, or "–" before it has finished."""
    return f"{val_score(exp_dir):.4f}" if (exp_dir / "results.json").exists() else "–"


def report(exp_dirs: list[Path], command: str, title: str = "Where DVML's synthetic samples land") -> str:
    rows, names = [], None
    for exp_dir in exp_dirs:
        values, count = experiment_geometry(exp_dir)
        names = list(values)
        rows.append(f"| `{exp_dir.name}` | {validation_score(exp_dir)} | {count} | " + " | ".join(
            f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for v in values.values()
        ) + " |")
    lines = [
        f"# {title}",
        "",
        *provenance_lines(command, [c for c in map(experiment_command, exp_dirs) if c]),
        "Each fold's best checkpoint, embedding the fold's own training classes (the test classes are not used), "
        f"with {DRAWS} synthetic samples per image. Mean ± standard deviation over the folds of all seeds. "
        "Variation: mu + sigma * eps, what is added to z_I to make a synthetic sample. Center accuracy: how often "
        "the nearest class center (the class mean of the unit z_I) is the sample's own class. Validation MAP@R: "
        "the experiment's own, mean over its seeds.",
        "",
        "| Experiment | validation MAP@R | folds | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
        *rows,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Where DVML's synthetic samples land, from finished experiments")
    parser.add_argument("experiments", nargs="+", type=Path, help="DVML experiment folders")
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.md is written there)")
    parser.add_argument("--title", default="Where DVML's synthetic samples land", help="the report's heading")
    args = parser.parse_args(argv)
    command = script_command("experiments/dvml_samples.py", argv)
    text = report(args.experiments, command, args.title)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
