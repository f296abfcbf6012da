"""What the package's finite checks cost a training step, with them on (the default) and off.

One step of each setting the plugin is used in, forward and backward, batch 128, float32:

- ``skewed_mean``: a linear embedder, ProxyAnchor with ``SkewedMeanRegularizer`` on its proxies
  (one check per step);
- ``flow``: a ``FlowEmbedder`` with ``JacobianDeterminantRegularizer`` as the ProxyAnchor
  loss's embedding regularizer (two checks: the flow's forward and the regularizer);
- ``dvml``: ``DVMLLoss`` around a TripletMarginLoss with T = 20 (the embedder's, the miner's and
  the loss's checks).

On a CPU a check is a pass over the tensors plus a Python branch: there is no device to wait for,
so this measures the checks' compute, not the synchronisation they force on a GPU (where each
check waits for the queued kernels, which the ratio here cannot show). The settings alternate
step by step so both see the same machine load; times are medians over ``--steps`` steps after a
warm-up. One CPU thread by default, for the reason given in ``flow_logdet.py``.

Run:  .venv/bin/python benchmarks/finite_checks.py [--steps 200] [--dim 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from pytorch_metric_learning import losses

from pml_regularizers import (
    DVMLEmbedder,
    DVMLLoss,
    FlowEmbedder,
    JacobianDeterminantRegularizer,
    SkewedMeanRegularizer,
    set_finite_checks,
)

BATCH, CLASSES, FEATURES = 128, 100, 256


def setups(dim: int) -> dict[str, Callable[[], None]]:
    """One training step per setting, each on its own models and a fixed batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, FEATURES, generator=g)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)

    linear = torch.nn.Linear(FEATURES, dim)
    proxy = losses.ProxyAnchorLoss(CLASSES, dim, weight_regularizer=SkewedMeanRegularizer())

    def skewed_mean() -> None:
        proxy(linear(x), labels).backward()

    flow = FlowEmbedder(FEATURES, dim, hidden_features=256)
    flow_loss = losses.ProxyAnchorLoss(
        CLASSES, dim, embedding_regularizer=JacobianDeterminantRegularizer(flow), embedding_reg_weight=0.1
    )

    def flow_step() -> None:
        flow_loss(flow(x), labels).backward()

    dvml = DVMLLoss(DVMLEmbedder(FEATURES, dim), losses.TripletMarginLoss(margin=0.2))

    def dvml_step() -> None:
        dvml(x, labels, epoch=1).backward()

    return {"skewed_mean": skewed_mean, "flow": flow_step, "dvml": dvml_step}


def timed(step: Callable[[], None], checks: bool) -> float:
    with set_finite_checks(checks):
        start = time.perf_counter()
        step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch {BATCH}, D = {args.dim}, "
        f"median of {args.steps} steps each"
    )
    print(f"{'setting':<12} {'checks on (ms)':>15} {'checks off (ms)':>16} {'on / off':>9}")
    for name, step in setups(args.dim).items():
        for _ in range(5):
            step()
        on, off = [], []
        for _ in range(args.steps):
            on.append(timed(step, True))
            off.append(timed(step, False))
        t_on, t_off = statistics.median(on), statistics.median(off)
        print(f"{name:<12} {1e3 * t_on:>15.2f} {1e3 * t_off:>16.2f} {t_on / t_off:>9.3f}")


if __name__ == "__main__":
    main()
