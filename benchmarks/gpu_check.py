"""The runner on a GPU as the field runs it: ResNet-50 at 224 px in bfloat16 on a CUB-layout tree.

It writes a CUB-200-2011 tree of generated JPEGs (``--classes`` classes of ``--per-class`` images,
300 to 500 px, in the official layout), then times the same work done two ways, each in its own
subprocess, alternating, ``--repeats`` times:

- ``runner``: ``pml-bench``'s ``run_experiment`` with ``preset=reality_check_cub`` (ResNet-50,
  RMSprop, 4 images per class, frozen BatchNorm, bf16) but no cross-validation, one seed, one epoch
  of ``--iterations`` batches, random initialisation (no download), then the test half embedded
  and scored;
- ``loop``: the same written by hand with PML's pieces: the second half held out, torchvision's
  ``ImageFolder`` over ``CUB_200_2011/images`` with the same transforms, PML's ``MPerClassSampler``,
  a torchvision ResNet-50 without its head under ``torch.autocast`` (bfloat16), a linear embedder,
  ``ProxyAnchorLoss``, RMSprop, the same number of steps, then the test half embedded and scored
  with PML's ``AccuracyCalculator``.

It prints the device's name, the median wall time of each, training steps and images per second
(from the time the training loop took, timed inside each process), and the ratio runner/loop (the
project's target: at most 1.05). Figures are what this run measured; nothing is hard-coded.

Run it where a GPU is (the whole check should take under 8 minutes on one H100/H200-class GPU):

    bash benchmarks/gpu_check.sh                       # defaults: 100 classes x 40 images, 300 steps
    .venv/bin/python benchmarks/gpu_check.py --device cpu --classes 16 --per-class 4 \\
        --iterations 2 --size 32 --resize 36 --trunk resnet18 --repeats 1   # a smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, PER_CLASS_IN_BATCH, EMBEDDING = 32, 4, 128


def write_cub_tree(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """A CUB-200-2011 tree of generated RGB JPEGs, 300 to 500 px a side, in the official layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "CUB_200_2011"
    images, labels = [], []
    for c in range(1, classes + 1):
        folder = base / "images" / f"{c:03d}.Class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        tint = rng.integers(0, 256, 3)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(300, 501, 2))
            pixels = (rng.integers(0, 64, (h // 8, w // 8, 3)) + tint).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR)
            relative = f"{folder.name}/{folder.name}_{i:04d}.jpg"
            image.save(base / "images" / relative, quality=90)
            images.append(relative)
            labels.append(c)
    lines = [f"{k} {path}" for k, path in enumerate(images, start=1)]
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    lines = [f"{k} {label}" for k, label in enumerate(labels, start=1)]
    (base / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def run_runner(args: argparse.Namespace, tree: str, out: str) -> float:
    """The runner's work; returns the seconds its training loop took."""
    from pml_regularizers.bench import BenchTrainerMixin, load_spec, run_experiment

    spent = []
    train_epoch = BenchTrainerMixin.train_epoch

    def timed_train_epoch(self, *a, **kw):
        start = _now(args.device)
        loss = train_epoch(self, *a, **kw)
        spent.append(_now(args.device) - start)
        return loss

    BenchTrainerMixin.train_epoch = timed_train_epoch  # timing only, in this measuring process
    run_experiment(
        load_spec(
            [
                "preset=reality_check_cub",
                f"dataset.root={tree}",
                f"output_dir={out}",
                f"trunk.name={args.trunk}",
                "trunk.pretrained=false",
                f"dataset.size={args.size}",
                f"dataset.resize={args.resize}",
                "cv_folds=0",
                "patience=null",
                "seeds=1",
                "epochs=1",
                f"iterations_per_epoch={args.iterations}",
                f"device={args.device}",
                f"num_workers={args.workers}",
            ]
        )
    )
    return sum(spent)


def run_loop(args: argparse.Namespace, tree: str, out: str) -> float:
    """The same work by hand; returns the seconds its training loop took."""
    import torch
    import torchvision
    from pytorch_metric_learning import losses, samplers
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from torchvision.transforms import v2

    device = torch.device(args.device)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train_tf = v2.Compose([v2.RandomResizedCrop(args.size), v2.RandomHorizontalFlip(), *tail])
    eval_tf = v2.Compose([v2.Resize(args.resize), v2.CenterCrop(args.size), *tail])
    root = f"{tree}/CUB_200_2011/images"
    train_all = torchvision.datasets.ImageFolder(root, transform=train_tf)
    test_all = torchvision.datasets.ImageFolder(root, transform=eval_tf)
    half = len(train_all.classes) // 2
    targets = torch.tensor(train_all.targets)
    train_idx = torch.nonzero(targets < half).flatten().tolist()
    test_idx = torch.nonzero(targets >= half).flatten().tolist()
    train_set = torch.utils.data.Subset(train_all, train_idx)
    sampler = samplers.MPerClassSampler(
        targets[train_idx], PER_CLASS_IN_BATCH, batch_size=BATCH, length_before_new_iter=len(train_idx)
    )
    workers = min(8, len(os.sched_getaffinity(0))) if args.workers == "auto" else int(args.workers)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=BATCH,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    trunk = torchvision.models.get_model(args.trunk, weights=None)
    width = trunk.fc.in_features
    trunk.fc = torch.nn.Identity()
    trunk = trunk.to(device)
    cuda = device.type == "cuda"
    if cuda:
        trunk = trunk.to(memory_format=torch.channels_last)
    embedder = torch.nn.Linear(width, EMBEDDING).to(device)
    loss_fn = losses.ProxyAnchorLoss(num_classes=half, embedding_size=EMBEDDING).to(device)
    params = [*trunk.parameters(), *embedder.parameters(), *loss_fn.parameters()]
    optimizer = torch.optim.RMSprop(params, lr=1e-6, weight_decay=1e-4, momentum=0.9)

    def features(x):
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return trunk(x).float()

    trunk.train()
    trunk.apply(lambda m: m.eval() if "BatchNorm" in type(m).__name__ else None)  # frozen BN
    start = _now(args.device)
    steps = 0
    while steps < args.iterations:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss_fn(embedder(features(x)), y).backward()
            optimizer.step()
            steps += 1
            if steps == args.iterations:
                break
    spent = _now(args.device) - start
    trunk.eval()
    test_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(test_all, test_idx), batch_size=256, num_workers=workers, pin_memory=cuda
    )
    embeddings, labels = [], []
    with torch.no_grad():
        for x, y in test_loader:
            embeddings.append(embedder(features(x.to(device))).cpu())
            labels.append(y)
    emb = torch.nn.functional.normalize(torch.cat(embeddings), dim=1)
    AccuracyCalculator(include=("mean_average_precision_at_r",)).get_accuracy(emb, torch.cat(labels))
    Path(out, "done").write_text("ok")
    return spent


def _now(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def _child(args: argparse.Namespace) -> None:
    out = tempfile.mkdtemp(prefix=f"gpu-check-{args.child}-")
    start = time.perf_counter()
    train_seconds = (run_runner if args.child == "runner" else run_loop)(args, args.tree, out)
    print(json.dumps({"total": time.perf_counter() - start, "train": train_seconds}))


def _spawn(kind: str, args: argparse.Namespace, tree: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--tree", str(tree)]
    for key in ("device", "iterations", "size", "resize", "trunk", "workers"):
        cmd += [f"--{key}", str(getattr(args, key))]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--trunk", default="resnet50")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=("runner", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    import torch

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tree = write_cub_tree(Path(tmp), args.classes, args.per_class)
        print(
            f"device: {name}; tree: {args.classes} classes x {args.per_class} JPEGs "
            f"({time.perf_counter() - start:.0f} s to write)",
            flush=True,
        )
        runs = {"runner": [], "loop": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(_spawn(kind, args, tree))
                print(f"{kind}: {runs[kind][-1]}", flush=True)
    images = args.iterations * BATCH
    for kind, results in runs.items():
        total = statistics.median(r["total"] for r in results)
        train = statistics.median(r["train"] for r in results)
        print(
            f"{kind}: {total:.1f} s in all, training {train:.1f} s: {args.iterations / train:.2f} "
            f"steps/s, {images / train:.0f} images/s"
        )
    ratio = statistics.median(r["total"] for r in runs["runner"]) / statistics.median(r["total"] for r in runs["loop"])
    train_ratio = statistics.median(r["train"] for r in runs["runner"]) / statistics.median(
        r["train"] for r in runs["loop"]
    )
    print(f"runner / loop: {ratio:.3f} in all, {train_ratio:.3f} in training (target <= 1.05)")


if __name__ == "__main__":
    main()
