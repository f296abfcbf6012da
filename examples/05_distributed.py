# Distributed (data-parallel) training with torchrun and PML's distributed wrappers.
#
# Each process trains on its own share of every batch. The model is wrapped in PyTorch's
# DistributedDataParallel; the loss and miner in PML's DistributedLossWrapper and
# DistributedMinerWrapper, which gather the embeddings of all processes so that tuples are mined and
# the loss computed over the global batch. The loss carries SkewedMeanRegularizer as its
# embedding regularizer. Rank 0 then evaluates on unseen classes with PML's AccuracyCalculator.
#
# Run on CPU with 2 processes (gloo):
#     torchrun --standalone --nproc_per_node=2 examples/05_distributed.py --size small
# Run without torchrun and it starts the 2 processes itself:
#     python examples/05_distributed.py --size tiny
# The benchmark runner does the same for whole experiments:
#     torchrun --standalone --nproc_per_node=2 -m pml_regularizers.bench run batch_size=64
from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import distributed as pml_dist
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torch.nn.parallel import DistributedDataParallel

from pml_regularizers import SkewedMeanRegularizer

# classes, samples per class, input width, training steps, global batch
SIZES = {"tiny": (20, 20, 16, 30, 32), "small": (60, 30, 32, 300, 64), "full": (200, 40, 64, 2000, 128)}


def make_data(classes: int, per_class: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random class means, the same on every process."""
    g = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(classes, dim, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return means[labels] + torch.randn(len(labels), dim, generator=g), labels


def train(rank: int, world: int, size: str) -> None:
    classes, per_class, dim, steps, batch = SIZES[size]
    x, y = make_data(classes, per_class, dim)
    train_mask = y < classes // 2  # first half of the classes trains, second half tests
    x_train, y_train = x[train_mask], y[train_mask]

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    model = DistributedDataParallel(model)  # averages gradients over the processes
    loss_fn = pml_dist.DistributedLossWrapper(
        losses.MultiSimilarityLoss(embedding_regularizer=SkewedMeanRegularizer(lam=4.0), embedding_reg_weight=0.1)
    )
    miner = pml_dist.DistributedMinerWrapper(miners.MultiSimilarityMiner(epsilon=0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(1000 + rank)  # each process draws its own share
    for step in range(steps):
        idx = torch.randint(0, len(y_train), (batch // world,), generator=g)
        emb = model(x_train[idx])
        loss = loss_fn(emb, y_train[idx], miner(emb, y_train[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0 and (step + 1) % max(steps // 5, 1) == 0:
            print(f"step {step + 1:5d}  loss {loss.item():.4f}")

    if rank == 0:
        model.eval()
        with torch.no_grad():
            test_emb = model.module(x[~train_mask])
        acc = AccuracyCalculator(include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count")
        result = acc.get_accuracy(test_emb, y[~train_mask])
        print(
            f"{world} processes; unseen classes: MAP@R {result['mean_average_precision_at_r']:.4f}, "
            f"P@1 {result['precision_at_1']:.4f}"
        )

    # Every process waits here for rank 0's evaluation, so that none leaves the job early. On gloo,
    # monitored_barrier rather than barrier: a gloo barrier, like any collective on a tensor made in
    # Python, hands Python objects to gloo's threads, which free them after the call returns; if
    # that happens while Python is shutting down, the process aborts ("terminate called without
    # an active exception"). monitored_barrier hands over none, and waits without holding the GIL,
    # so gloo can free what the last backward() left meanwhile.
    dist.monitored_barrier()


def _spawned(rank: int, world: int, size: str, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train(rank, world, size)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description="Data-parallel training with PML's distributed wrappers")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--processes", type=int, default=2, help="processes to start without torchrun")
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:  # started by torchrun
        dist.init_process_group("gloo")
        try:
            train(dist.get_rank(), dist.get_world_size(), args.size)
        finally:
            dist.destroy_process_group()
        return
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_spawned, args=(args.processes, args.size, init_file), nprocs=args.processes, join=True)


if __name__ == "__main__":
    main()
