"""Time and peak memory of SkewedMeanRegularizer against PML's RegularFace and a naive version.

For each number of rows C (D = 512 by default) it measures forward + backward of:

- ``skewed_mean``: this project's SkewedMeanRegularizer (pairwise form, cosine, streaming kernel);
- ``regularface``: PML's RegularFaceRegularizer, which materialises the full C x C matrix;
- ``naive``: the full-matrix log-mean-exp over the upper triangle (triu_indices + logsumexp).

Each (method, C) runs in a fresh subprocess, warmed up by one call on 64 rows; peak extra memory is
the rise of the process's peak resident set size over its value once the inputs exist. Time is the
best of ``--repeats`` runs (one run for C > 1000). It also checks, in float64 at C = 1000, that this regularizer's value
equals the naive one to relative 1e-5, and prints the ratios the project's targets are stated in.

Run:  .venv/bin/python benchmarks/skewed_mean_scaling.py [--sizes 100 1000 4000 11318] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

LAM = 4.0


def _make_method(name: str):
    import torch
    from pytorch_metric_learning.regularizers import RegularFaceRegularizer

    from pml_regularizers import SkewedMeanRegularizer

    if name == "skewed_mean":
        return SkewedMeanRegularizer(lam=LAM)
    if name == "regularface":
        return RegularFaceRegularizer()
    if name == "naive":

        def naive(w):
            u = torch.nn.functional.normalize(w, dim=1)
            s = u @ u.T
            iu = torch.triu_indices(w.shape[0], w.shape[0], 1, device=w.device)
            a = s[iu[0], iu[1]]
            return (torch.logsumexp(LAM * a, 0) - math.log(a.numel())) / LAM

        return naive
    raise ValueError(f"unknown method {name!r}")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(name: str, rows: int, dim: int, dtype: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    fn = _make_method(name)
    dt = getattr(torch, dtype)
    # one call on a tiny input first, so one-off library set-up (thread pools, BLAS buffers,
    # the autograd engine) is not counted as the method's memory
    fn(torch.randn(64, dim, dtype=dt, requires_grad=True)).backward()
    w = torch.randn(rows, dim, dtype=dt, requires_grad=True)
    base = _peak_rss_bytes()
    times, value, peak = [], None, None
    for _ in range(repeats):
        w.grad = None
        t0 = time.perf_counter()
        out = fn(w)
        out.backward()
        times.append(time.perf_counter() - t0)
        value = float(out)
        if peak is None:
            peak = _peak_rss_bytes() - base
    return {"time_s": min(times), "peak_extra_bytes": peak, "value": value}


def run_worker(name: str, rows: int, dim: int, dtype: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, str(rows), str(dim), dtype, str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000, 11318])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, rows, dim, dtype, repeats = args.worker
        print(json.dumps(worker(name, int(rows), int(dim), dtype, int(repeats))))
        return

    methods = ["skewed_mean", "regularface", "naive"]
    print(f"forward+backward, D = {args.dim}, float32, lam = {LAM}, 1 process per cell")
    header = f"{'C':>6} {'method':>12} {'time (s)':>9} {'peak extra (MB)':>16}"
    print(header)
    print("-" * len(header))
    summary = []
    for rows in args.sizes:
        repeats = args.repeats if rows <= 1000 else 1
        res = {m: run_worker(m, rows, args.dim, "float32", repeats) for m in methods}
        for m in methods:
            print(f"{rows:>6} {m:>12} {res[m]['time_s']:>9.3f} {res[m]['peak_extra_bytes'] / 2**20:>16.1f}")
        summary.append(
            (
                rows,
                res["skewed_mean"]["time_s"] / res["regularface"]["time_s"],
                res["skewed_mean"]["peak_extra_bytes"] / max(res["naive"]["peak_extra_bytes"], 1),
            )
        )
    print()
    print(f"{'C':>6} {'time / RegularFace':>19} {'peak extra / naive':>19}")
    for rows, t_ratio, m_ratio in summary:
        print(f"{rows:>6} {t_ratio:>19.3f} {m_ratio:>19.3f}")

    ours = run_worker("skewed_mean", 1000, args.dim, "float64", 1)["value"]
    naive = run_worker("naive", 1000, args.dim, "float64", 1)["value"]
    rel = abs(ours - naive) / abs(naive)
    print()
    print(f"float64, C = 1000: skewed_mean {ours:.12g}, naive {naive:.12g}, relative diff {rel:.2e}")
    print("targets at the largest C: time <= 0.7x RegularFace, peak extra <= 0.10x naive; value relative diff <= 1e-5")


if __name__ == "__main__":
    main()
