"""Overhead of the benchmark runner over a hand-written PML script doing the same work.

Both sides train the same model on the same data for one epoch and test it once:

- ``runner``: ``run_experiment(load_spec([...]))`` with ``epochs=1 seeds=1 cv_folds=0``: Hydra
  composition, config checks, record-keeper logs, the checkpoint, the test embeddings and the
  results JSON;
- ``script``: what a user writes by hand with PML: the glyph set from the same cache, a conv-4
  trunk and a linear embedder, ProxyAnchorLoss, Adam, ``MetricLossOnly`` with
  ``logging_presets`` hooks for one epoch, then the test half's embeddings scored with
  ``AccuracyCalculator`` (the same metric set the runner reports).

Each run is a fresh subprocess, timed from just after ``import torch`` to the end (imports of the
runner and of PML included); the two kinds alternate, ``--repeats`` times each, and the script
prints the median of each and their ratio. The project's target is an overhead of at most 5 %
(ratio <= 1.05). The glyph cache is built once before timing.

Run:  .venv/bin/python benchmarks/runner_overhead.py [--classes 600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

EMBEDDING, BATCH, SIZE = 64, 64, 32


def _overrides(out: str, cache: str, classes: int) -> list[str]:
    return [
        f"output_dir={out}",
        f"dataset.cache_dir={cache}",
        f"dataset.options.num_classes={classes}",
        f"embedding_size={EMBEDDING}",
        f"batch_size={BATCH}",
        "epochs=1",
        "seeds=1",
        "cv_folds=0",
        "device=cpu",
    ]


def run_runner(out: str, cache: str, classes: int) -> None:
    from pml_regularizers.bench import load_spec, run_experiment

    run_experiment(load_spec(_overrides(out, cache, classes)))


def run_script(out: str, cache: str, classes: int) -> None:
    import torch
    from pytorch_metric_learning import losses, trainers
    from pytorch_metric_learning.utils import logging_presets

    from pml_regularizers.bench import BenchAccuracyCalculator
    from pml_regularizers.bench.data import TensorImageDataset, class_disjoint_split, load_glyphs
    from pml_regularizers.bench.models import Conv4

    torch.manual_seed(0)
    data = load_glyphs(size=SIZE, num_classes=classes, cache_dir=cache)
    train_classes, test_classes = class_disjoint_split(data.labels)
    train_set = TensorImageDataset(data.subset(train_classes), augment=True, fill=1.0)
    test_set = TensorImageDataset(data.subset(test_classes), augment=False)
    trunk = Conv4(in_channels=1, image_size=SIZE)
    embedder = torch.nn.Linear(trunk.output_size, EMBEDDING)
    loss = losses.ProxyAnchorLoss(num_classes=len(train_classes), embedding_size=EMBEDDING, margin=0.1, alpha=32)
    optimizers = {
        "trunk_optimizer": torch.optim.Adam(trunk.parameters(), lr=1e-3, weight_decay=1e-4),
        "embedder_optimizer": torch.optim.Adam(embedder.parameters(), lr=1e-3, weight_decay=1e-4),
        "metric_loss_optimizer": torch.optim.Adam(loss.parameters(), lr=1e-2, weight_decay=1e-4),
    }
    record_keeper, _, _ = logging_presets.get_record_keeper(f"{out}/logs", f"{out}/tensorboard")
    hooks = logging_presets.get_hook_container(record_keeper)
    trainer = trainers.MetricLossOnly(
        models={"trunk": trunk, "embedder": embedder},
        optimizers=optimizers,
        batch_size=BATCH,
        loss_funcs={"metric_loss": loss},
        dataset=train_set,
        dataloader_num_workers=0,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
    )
    trainer.train(num_epochs=1)
    record_keeper.save_records()
    trunk.eval()
    embedder.eval()
    with torch.no_grad():
        loader = torch.utils.data.DataLoader(test_set, batch_size=256)
        pairs = [(embedder(trunk(x)), y) for x, y in loader]
    emb = torch.nn.functional.normalize(torch.cat([e for e, _ in pairs]), dim=1)
    labels = torch.cat([y for _, y in pairs])
    BenchAccuracyCalculator().get_accuracy(emb, labels)


def worker(kind: str, cache: str, classes: int) -> float:
    import time

    import torch  # noqa: F401  (the clock starts once torch is loaded, for both kinds)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        (run_runner if kind == "runner" else run_script)(out, cache, classes)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=600, help="glyph classes (half train)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=("runner", "script"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.cache, args.classes)))
        return
    with tempfile.TemporaryDirectory() as cache:
        from pml_regularizers.bench.data import load_glyphs

        load_glyphs(size=SIZE, num_classes=args.classes, cache_dir=cache)
        times: dict[str, list[float]] = {"runner": [], "script": []}
        for _ in range(args.repeats):
            for kind in ("script", "runner"):
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    kind,
                    "--cache",
                    cache,
                    "--classes",
                    str(args.classes),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                times[kind].append(float(out.strip().splitlines()[-1]))
    print(
        f"one epoch + test, glyphs {args.classes} classes ({args.classes // 2} train), "
        f"{SIZE}x{SIZE}, conv-4, batch {BATCH}, {EMBEDDING}-d, CPU"
    )
    for kind, values in times.items():
        print(f"  {kind:7s} median {statistics.median(values):7.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in values))
    ratio = statistics.median(times["runner"]) / statistics.median(times["script"])
    print(f"runner / script = {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
