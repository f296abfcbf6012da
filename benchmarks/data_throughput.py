"""Throughput and memory of the natural-image pipeline against torchvision's ImageFolder.

Throughput: a generated ImageFolder tree of ``--images`` distinct RGB JPEGs (sides drawn from
``--min-side`` to ``--max-side`` pixels, ``--classes`` class folders) is read, one training epoch
at a time, by

- ``pml``: ``NaturalImageDataset(list_image_folder(root), transform)`` through
  ``training_loader`` (a SeededSampler shuffling the items and seeding each one's augmentation);
- ``torchvision``: ``torchvision.datasets.ImageFolder(root, transform=transform)`` through a plain
  shuffling ``DataLoader``,

with the same transform (``natural_transforms(train=True, crop=--crop)``: RandomResizedCrop, flip,
ImageNet normalisation), batch size, number of workers and ``drop_last``. The two alternate for
``--repeats`` epochs each, after one warm-up epoch each (file cache, allocator); every epoch
starts its workers anew. The script prints each side's median images per second and their
ratio; the project's target is a ratio of at least 0.9.

Memory: for each count in ``--memory-images`` (default 1,000 and 10,000), a fresh process lists a
tree of that many copies of one ``--memory-side`` px JPEG and iterates one ``pml`` training epoch
with the same settings. It reports its peak resident memory (VmHWM from /proc/self/status: the
peak of the process image itself; ``getrusage``'s ``ru_maxrss`` would include this script's own
peak, inherited at fork and exec) with and without what it held after its imports, and the
largest worker's peak (``ru_maxrss`` of the reaped workers, which counts the pages they share
with the main process). The target is a peak at the largest count at most 10 % above the
smallest. Linux only.

Run:  .venv/bin/python benchmarks/data_throughput.py [--images 2000] [--classes 20]
          [--min-side 256] [--max-side 500] [--batch 32] [--workers N (default: auto)]
          [--crop 224] [--repeats 3] [--memory-images 1000 10000] [--memory-side 128]
          [--root DIR (keep the generated trees there, reused by later runs)]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def is_written(root: Path, spec: str) -> bool:
    """Whether ``root`` holds a finished tree of ``spec``; a tree of another spec is removed."""
    done = root / "done"
    if done.is_file() and done.read_text() == spec:
        return True
    shutil.rmtree(root, ignore_errors=True)
    return False


def write_tree(root: Path, images: int, classes: int, min_side: int, max_side: int) -> bool:
    """Distinct RGB JPEGs (a seeded colour pattern), ``root/class_NNN/NNNNN.jpg``; False when
    ``root`` already held them."""
    spec = f"{images} {classes} {min_side} {max_side}"
    if is_written(root, spec):
        return False
    rng = np.random.default_rng(0)
    for k in range(images):
        width, height = rng.integers(min_side, max_side + 1, 2)
        y, x = np.mgrid[0:height, 0:width]
        slopes = rng.uniform(0.2, 2.0, (3, 2))
        channels = [(rng.integers(256) + s[0] * x + s[1] * y) % 256 for s in slopes]
        pixels = np.stack(channels, axis=-1) + rng.integers(0, 32, (height, width, 3))
        path = root / f"class_{k % classes:03d}" / f"{k:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    (root / "done").write_text(spec)
    return True


def write_copies(root: Path, images: int, side: int, classes: int = 100) -> Path:
    """``images`` copies of one JPEG, ``root/images/class_NNN/NNNNN.jpg``."""
    spec = f"{images} {side} {classes}"
    if is_written(root, spec):
        return root
    write_tree(root / "source", 1, 1, side, side)
    data = (root / "source" / "class_000" / "00000.jpg").read_bytes()
    for k in range(images):
        path = root / "images" / f"class_{k % classes:03d}" / f"{k:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "done").write_text(spec)
    return root


def loaders(root: Path, batch: int, workers: int, crop: int) -> dict[str, object]:
    import torch
    from torchvision.datasets import ImageFolder

    from pml_regularizers.bench import training_loader
    from pml_regularizers.bench.data import NaturalImageDataset, list_image_folder, natural_transforms

    transform = natural_transforms(True, crop=crop)
    pml = training_loader(NaturalImageDataset(list_image_folder(root), transform), batch, num_workers=workers)
    plain = torch.utils.data.DataLoader(
        ImageFolder(str(root), transform=transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    return {"pml": pml, "torchvision": plain}


def epoch_rate(loader) -> float:
    """Images per second over one epoch, worker start-up included."""
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in loader)
    return count / (time.perf_counter() - start)


def peak_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def memory_child(root: Path, batch: int, workers: int, crop: int) -> dict[str, int]:
    """One ``pml`` epoch over ``root``, in this (fresh) process; peaks in KiB."""
    import torch

    from pml_regularizers.bench import training_loader
    from pml_regularizers.bench.data import NaturalImageDataset, list_image_folder, natural_transforms

    transform = natural_transforms(True, crop=crop)
    after_imports = peak_kib()
    files = list_image_folder(root)
    loader = training_loader(NaturalImageDataset(files, transform), batch, num_workers=workers)
    torch.manual_seed(0)
    count = sum(len(labels) for _, labels in loader)
    del loader  # shuts the workers down, so that RUSAGE_CHILDREN covers them
    return {
        "images": len(files.paths),
        "served": count,
        "after_imports": after_imports,
        "peak": peak_kib(),
        "worker_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--max-side", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: auto)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-images", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--memory-side", type=int, default=128)
    parser.add_argument("--root", type=Path, help="folder for the generated trees (kept)")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers is None:
        from pml_regularizers.bench import auto_num_workers

        args.workers = auto_num_workers()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.batch, args.workers, args.crop)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(
            f"{cores} CPU cores, {args.workers} workers, batch {args.batch}, crop {args.crop}; "
            f"1-minute load average {os.getloadavg()[0]:.1f}"
        )
        start = time.perf_counter()
        tree = root / "throughput"
        wrote = write_tree(tree, args.images, args.classes, args.min_side, args.max_side)
        written = f"{time.perf_counter() - start:.0f} s to write" if wrote else "reused"
        print(
            f"throughput tree: {args.images} JPEGs of {args.min_side}-{args.max_side} px in "
            f"{args.classes} classes ({written})"
        )
        kinds = loaders(tree, args.batch, args.workers, args.crop)
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for loader in kinds.values():
            epoch_rate(loader)  # warm-up
        for _ in range(args.repeats):
            for kind, loader in kinds.items():
                rates[kind].append(epoch_rate(loader))
        median = {kind: statistics.median(values) for kind, values in rates.items()}
        for kind, values in rates.items():
            listed = ", ".join(f"{v:.0f}" for v in values)
            print(f"  {kind:<12} {median[kind]:7.1f} images/s (median of {listed})")
        ratio = median["pml"] / median["torchvision"]
        verdict = "met" if ratio >= 0.9 else "NOT met"
        print(f"ratio pml / torchvision: {ratio:.2f}x (target >= 0.9x: {verdict})")

        results = []
        for count in args.memory_images:
            copies = write_copies(root / f"memory-{count}", count, args.memory_side)
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--memory-child",
                str(copies / "images"),
                "--batch",
                str(args.batch),
                "--workers",
                str(args.workers),
                "--crop",
                str(args.crop),
            ]
            output = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(output)
            results.append(result)
            above = (result["peak"] - result["after_imports"]) / 1024
            print(
                f"  {count:>6} images ({args.memory_side} px): peak RSS "
                f"{result['peak'] / 1024:.1f} MiB, {above:.1f} MiB above the imports; "
                f"largest worker {result['worker_peak'] / 1024:.1f} MiB"
            )
        if len(results) >= 2:
            first, last = results[0], results[-1]
            growth = last["peak"] / first["peak"] - 1
            verdict = "met" if growth < 0.1 else "NOT met"
            line = (
                f"peak RSS growth {first['images']} -> {last['images']} images: "
                f"{100 * growth:+.1f} % (target < 10 %: {verdict})"
            )
            if first["worker_peak"]:
                worker_growth = last["worker_peak"] / first["worker_peak"] - 1
                line += f"; largest worker {100 * worker_growth:+.1f} %"
            print(line)


if __name__ == "__main__":
    main()
