"""Forward + backward time of FlowEmbedder with its log|det J| against an MLP embedder of about the
same parameter count and against the brute-force Jacobian log-determinant.

For each embedding size D (batch 128, float32, trunk width = D, FlowEmbedder's defaults: 4 affine
coupling blocks, conditioners with one hidden layer of 512) it times one training step's worth of
work, forward and backward of a loss on the output:

- ``flow``: ``FlowEmbedder``; loss ``mean(z^2) + mean(log|det J|)``, the log-determinant from the
  coupling structure (what the regularizer reads);
- ``mlp``: ``Linear(D, H) -> ReLU -> Linear(H, D)`` with H chosen for the flow's parameter count;
  loss ``mean(z^2)``;
- ``brute``: the same flow, its log-determinant from ``torch.func.vmap(torch.func.jacrev(.))``
  and ``slogdet`` (O(D^3) per sample, a second-order backward), over the batch in chunks of 32.

Times are the best of ``--repeats`` runs (flow and MLP alternate, so both see the same machine
load; brute force runs a tenth as often, twice at D = 512). Before timing, the flow is moved off
the identity and the brute-force log-determinant is checked against the flow's. The ratios the
targets are stated in are printed at the end.

One CPU thread by default: with more torch threads than idle cores (a small machine shared with
other jobs), OpenMP's spinning threads slow every small op by up to 100x, for both embedders, and
the ratios would measure the machine's load rather than the code.

Run:  .venv/bin/python benchmarks/flow_logdet.py [--sizes 64 128 512] [--repeats 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from pml_regularizers import FlowEmbedder

BATCH = 128
CHUNK = 32


def mlp_like(flow: torch.nn.Module, d: int) -> torch.nn.Module:
    """Two-layer MLP from d to d with about as many parameters as ``flow``."""
    target = sum(p.numel() for p in flow.parameters())
    hidden = max(1, round((target - d) / (2 * d + 1)))
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d))


def brute_force_logdet(flow: FlowEmbedder, h: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(flow.transform()))(h)
    return torch.linalg.slogdet(jac)[1]


def step_flow(flow: FlowEmbedder, x: torch.Tensor) -> None:
    z = flow(x)
    (z.square().mean() + flow.latest_logdet.mean()).backward()


def step_mlp(mlp: torch.nn.Module, x: torch.Tensor) -> None:
    mlp(x).square().mean().backward()


def step_brute(flow: FlowEmbedder, x: torch.Tensor) -> None:
    z = flow.transform()(x)
    z.square().mean().backward()
    for chunk in x.split(CHUNK):  # the mean over the batch, accumulated chunk by chunk
        (brute_force_logdet(flow, chunk).sum() / len(x)).backward()


def measure(d: int, repeats: int) -> dict:
    torch.manual_seed(0)
    flow = FlowEmbedder(in_features=d, out_features=d)
    with torch.no_grad():  # off the identity, so the log-determinant is not trivially 0
        for block in flow.blocks:
            block.hyper[-1].weight.normal_(0.0, 0.01)
    mlp = mlp_like(flow, d)
    x = torch.randn(BATCH, d, requires_grad=True)

    with torch.no_grad():
        _, ours = flow.forward_and_logdet(x[:16])
        check = (brute_force_logdet(flow, x[:16]) - ours).abs().max().item()
        scale = ours.abs().max().item()

    steps = {
        "flow": lambda: step_flow(flow, x),
        "mlp": lambda: step_mlp(mlp, x),
        "brute": lambda: step_brute(flow, x),
    }
    for step in steps.values():  # warm-up
        step()
    times = {name: float("inf") for name in steps}
    brute_repeats = max(1, repeats // 10) if d <= 128 else 2
    schedule = [("flow", "mlp")] * repeats + [("brute",)] * brute_repeats
    for names in schedule:
        for name in names:
            flow.zero_grad(set_to_none=True)
            mlp.zero_grad(set_to_none=True)
            x.grad = None
            t0 = time.perf_counter()
            steps[name]()
            times[name] = min(times[name], time.perf_counter() - t0)
    return {
        "times": times,
        "params": tuple(sum(p.numel() for p in m.parameters()) for m in (flow, mlp)),
        "check": (check, scale),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 512])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"forward+backward, batch {BATCH}, float32, FlowEmbedder defaults (4 affine blocks, "
        f"hidden 512), {args.threads} CPU thread(s), best of {args.repeats} (brute force: fewer)"
    )
    header = (
        f"{'D':>5} {'flow params':>12} {'mlp params':>11} {'flow (ms)':>10} {'mlp (ms)':>9} "
        f"{'brute (ms)':>11} {'flow/mlp':>9} {'brute/flow':>11} {'|logdet diff|':>14}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for d in args.sizes:
        res = measure(d, args.repeats)
        results[d] = res
        t = res["times"]
        diff, scale = res["check"]
        print(
            f"{d:>5} {res['params'][0]:>12,} {res['params'][1]:>11,} {1e3 * t['flow']:>10.2f} "
            f"{1e3 * t['mlp']:>9.2f} {1e3 * t['brute']:>11.1f} {t['flow'] / t['mlp']:>9.2f} "
            f"{t['brute'] / t['flow']:>11.1f} {diff:>8.1e} of {scale:.2f}"
        )
    print()
    print("targets: flow/mlp <= 2 at every D; brute/flow >= 100 at D = 128")
    for d, res in results.items():
        t = res["times"]
        verdict = "met" if t["flow"] / t["mlp"] <= 2 else "NOT met"
        line = f"  D = {d}: flow/mlp {t['flow'] / t['mlp']:.2f} ({verdict})"
        if d == 128:
            verdict = "met" if t["brute"] / t["flow"] >= 100 else "NOT met"
            line += f"; brute/flow {t['brute'] / t['flow']:.0f} ({verdict})"
        print(line)


if __name__ == "__main__":
    main()
