"""Per-iteration time of DVMLTrainer (T = 20) against PML's MetricLossOnly, same everything else.

Both trainers get the same trunk: the project's Conv4 on 1x32x32 images (256 output features),
the benchmark runner's default trunk on its default glyph images. The embedding size is the same
(64, the runner's default), with a Linear embedder for MetricLossOnly and a DVMLEmbedder for DVML.
The loss and miner are the same too: TripletMarginLoss(margin=0.1) with
TripletMarginMiner(margin=0.2, semihard), the runner's triplet configs. Both use Adam and batches of
64 (16 classes x 4, MPerClassSampler). The data are Gaussian class clusters drawn as images. The
trunk must be realistic, because DVML's extra work (three heads, T x B decoded samples, T mining
passes and a B x TB loss) does not depend on the trunk. Next to a trivially cheap trunk any extra
work looks large; next to a huge one it vanishes.

Each trainer is built once and warmed up with one round (DVML's phase 1). Then the two alternate
for ``--rounds`` rounds of ``--iters`` iterations each, one ``train`` call per round and epochs
2, 3, ..., so DVML runs in phase 2, its slower phase. The per-iteration time of each is the median
over rounds. The script prints both times, their ratio and the target (<= 1.5x), and the load
average: on an oversubscribed machine the timings are not trustworthy, DVML's least (it runs many
more small operations, and each parallel one can wait for a descheduled thread).

Run:  .venv/bin/python benchmarks/dvml_step.py [--batch 64] [--embedding 64] [--samples 20]
          [--decoder-hidden 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings

import torch
from pytorch_metric_learning import losses, miners, samplers, trainers

from pml_regularizers import DVMLEmbedder, DVMLTrainer
from pml_regularizers.bench.models import Conv4

IMAGE_SIZE, CLASSES, PER_CLASS, PER_BATCH_CLASS = 32, 64, 40, 4


def make_images(seed: int = 0) -> torch.utils.data.TensorDataset:
    """Gaussian class clusters drawn as 1 x 32 x 32 images."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = centers[labels] + 0.5 * torch.randn(len(labels), 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return torch.utils.data.TensorDataset(x, labels)


def build(kind: str, dataset, batch: int, embedding: int, samples: int, iters: int, decoder_hidden: int | None = None):
    torch.manual_seed(0)
    trunk = Conv4(in_channels=1, image_size=IMAGE_SIZE)
    if kind == "dvml":
        embedder: torch.nn.Module = DVMLEmbedder(
            in_features=trunk.output_size, out_features=embedding, decoder_hidden=decoder_hidden
        )
    else:
        embedder = torch.nn.Linear(trunk.output_size, embedding)
    sampler = samplers.MPerClassSampler(
        dataset.tensors[1], m=PER_BATCH_CLASS, batch_size=batch, length_before_new_iter=len(dataset)
    )
    common = dict(
        models={"trunk": trunk, "embedder": embedder},
        optimizers={
            "trunk_optimizer": torch.optim.Adam(trunk.parameters(), 1e-3),
            "embedder_optimizer": torch.optim.Adam(embedder.parameters(), 1e-3),
        },
        batch_size=batch,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.1)},
        mining_funcs={"tuple_miner": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")},
        dataset=dataset,
        sampler=sampler,
        iterations_per_epoch=iters,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
    )
    if kind == "dvml":
        return DVMLTrainer(num_samples=samples, **common)
    return trainers.MetricLossOnly(**common)


def time_round(trainer, epoch: int) -> float:
    t0 = time.perf_counter()
    trainer.train(start_epoch=epoch, num_epochs=epoch)
    return (time.perf_counter() - t0) / trainer.iterations_per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--decoder-hidden", type=int, default=None, help="DVML decoder width (default: the embedding size)"
    )
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("PML").setLevel(logging.WARNING)
    # PML's progress bar formats the loss tensor with %f, which warns on every iteration
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    load_before = os.getloadavg()[0]
    dataset = make_images()
    built = {
        k: build(k, dataset, args.batch, args.embedding, args.samples, args.iters, args.decoder_hidden)
        for k in ("metric_loss_only", "dvml")
    }
    for trainer in built.values():  # warm-up round, not timed
        time_round(trainer, 1)
    times: dict[str, list[float]] = {k: [] for k in built}
    for r in range(args.rounds):
        for k, trainer in built.items():
            times[k].append(time_round(trainer, r + 2))
    base, dvml = (statistics.median(times[k]) for k in ("metric_loss_only", "dvml"))
    print(
        f"Conv4 trunk on 1x{IMAGE_SIZE}x{IMAGE_SIZE} images, batch {args.batch} "
        f"({args.batch // PER_BATCH_CLASS} classes x {PER_BATCH_CLASS}), embedding {args.embedding}, "
        f"TripletMarginLoss + TripletMarginMiner(semihard), Adam, CPU, "
        f"{torch.get_num_threads()} threads"
    )
    dvml_models = built["dvml"].models
    decoder, width = dvml_models["embedder"].decoder_hidden, dvml_models["trunk"].output_size
    print(
        f"DVML decoder {args.embedding} -> {decoder} -> {width} (trunk width); "
        f"median of {args.rounds} rounds x {args.iters} iterations, per iteration:"
    )
    print(f"  MetricLossOnly            {1000 * base:8.1f} ms")
    print(f"  DVMLTrainer (T = {args.samples:>2})      {1000 * dvml:8.1f} ms")
    print(
        f"ratio DVML / MetricLossOnly: {dvml / base:.2f}x (target <= 1.5x: "
        f"{'met' if dvml / base <= 1.5 else 'NOT met'})"
    )
    load_after, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after, on {cores} cores")
    if max(load_before, load_after) > cores:
        print(
            "warning: the machine was oversubscribed; with more than 1 thread each of DVML's many "
            "small parallel ops can wait a scheduler slice, so its time is inflated (try --threads 1)"
        )


if __name__ == "__main__":
    main()
