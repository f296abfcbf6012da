# Deep Variational Metric Learning with PML's trainer and tester: DVMLTrainer, DVMLEmbedder and
# DVMLMiner around a TripletMarginLoss, evaluated on unseen classes with GlobalEmbeddingSpaceTester.
#
# The data are generated (Gaussian classes pushed through a fixed random nonlinear map, the second
# half of the classes held out for testing), so it needs no download and no ../shared folder. Each
# epoch prints DVML's phase and the four loss terms of its last iteration (unweighted, with the
# phase's weight); the end prints Precision@1 and MAP@R of z_I on the test classes.
#
# Run:  .venv/bin/python examples/03_dvml.py --size tiny
from __future__ import annotations

import argparse
import logging
import math

import torch
from pytorch_metric_learning import losses, miners, samplers, testers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from pml_regularizers import DVMLEmbedder, DVMLMiner, DVMLTrainer

# classes (train + test), samples per class, epochs, iterations per epoch, first epoch of phase 2
SIZES = {"tiny": (16, 12, 2, 5, 2), "small": (60, 20, 10, 30, 4), "full": (200, 30, 30, 100, 10)}
INPUT_DIM, HIDDEN, EMBED_DIM, BATCH, PER_CLASS_IN_BATCH = 32, 64, 16, 32, 4
TERMS = ["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"]


def make_data(num_classes: int, per_class: int, seed: int = 0):
    """Train and test TensorDatasets with disjoint classes."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, INPUT_DIM, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x = centers[labels] + 0.6 * torch.randn(len(labels), INPUT_DIM, generator=g)
    mix = torch.randn(INPUT_DIM, INPUT_DIM, generator=g) / math.sqrt(INPUT_DIM)
    x = torch.tanh(x @ mix) + 0.1 * x
    train = labels < num_classes // 2
    return (
        torch.utils.data.TensorDataset(x[train], labels[train]),
        torch.utils.data.TensorDataset(x[~train], labels[~train] - num_classes // 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="DVML with PML's trainer and tester")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    args = parser.parse_args()
    classes, per_class, epochs, iterations, phase2_start = SIZES[args.size]
    logging.getLogger("PML").setLevel(logging.WARNING)
    torch.manual_seed(0)
    train_set, test_set = make_data(classes, per_class)

    trunk = torch.nn.Sequential(torch.nn.Linear(INPUT_DIM, HIDDEN), torch.nn.ReLU())
    embedder = DVMLEmbedder(in_features=HIDDEN, out_features=EMBED_DIM)
    last: dict[str, float] = {}

    def remember_losses(trainer: DVMLTrainer) -> None:
        # trainer.losses holds the weighted terms; divide by the weights to show the terms
        for k in TERMS:
            w = trainer.loss_weights[k]
            last[k] = float(trainer.losses[k]) / w if w else float("nan")

    trainer = DVMLTrainer(
        models={"trunk": trunk, "embedder": embedder},
        optimizers={
            "trunk_optimizer": torch.optim.Adam(trunk.parameters(), 1e-3),
            "embedder_optimizer": torch.optim.Adam(embedder.parameters(), 1e-3),
        },
        batch_size=BATCH,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.1)},
        # the DVML miner mines the synthetic samples; a copy of its inner miner mines z_I
        mining_funcs={"tuple_miner": DVMLMiner(miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"))},
        dataset=train_set,
        sampler=samplers.MPerClassSampler(
            train_set.tensors[1], m=PER_CLASS_IN_BATCH, batch_size=BATCH, length_before_new_iter=BATCH * iterations
        ),
        iterations_per_epoch=iterations,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        end_of_iteration_hook=remember_losses,
        num_samples=20,
        phase2_start_epoch=phase2_start,
    )
    print(f"{'epoch':>5} {'phase':>5} " + " ".join(f"{k:>22}" for k in TERMS))
    for epoch in range(1, epochs + 1):
        trainer.train(start_epoch=epoch, num_epochs=epoch)
        weights = trainer.dvml_loss.weights(epoch)
        cells = " ".join(f"{last[k]:>12.4f} (x{weights[k]:.1f})".rjust(22) for k in TERMS)
        print(f"{epoch:>5} {trainer.phase:>5} {cells}")

    tester = testers.GlobalEmbeddingSpaceTester(
        dataloader_num_workers=0,
        accuracy_calculator=AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count"
        ),
    )
    acc = tester.test({"test": test_set}, epochs, trunk, embedder)["test"]
    print(
        f"test classes ({classes - classes // 2}, unseen in training), embedding z_I: "
        f"Precision@1 {acc['precision_at_1_level0']:.3f}, "
        f"MAP@R {acc['mean_average_precision_at_r_level0']:.3f}"
    )


if __name__ == "__main__":
    main()
