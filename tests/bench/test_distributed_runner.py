"""The runner's data-parallel mode: the wrapping it does (DDP models, PML's DistributedLossWrapper
and DistributedMinerWrapper, the loss-parameter gradient scaling) gives the same gradients as one
process on the whole batch, and ``torchrun`` with 2 gloo processes runs an experiment end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import losses, miners

from pml_regularizers.bench.models.build import Parts
from pml_regularizers.bench.protocol.torchrun import Dist, distribute

from .._gloo import spawn_gloo
from .test_runner import tiny

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORLD, PER_RANK, IN, DIM, CLASSES = 2, 6, 5, 4, 3


def make_parts(loss_seed):
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(IN, 8), torch.nn.Tanh()).double()
    embedder = torch.nn.Linear(8, DIM).double()
    torch.manual_seed(loss_seed)  # ranks start with different proxies; rank 0's must win
    loss = losses.ProxyAnchorLoss(num_classes=CLASSES, embedding_size=DIM).double()
    return Parts({"trunk": trunk, "embedder": embedder}, {"metric_loss": loss}, miners.MultiSimilarityMiner())


def batch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(WORLD * PER_RANK, IN, generator=g, dtype=torch.float64)
    return x, torch.arange(WORLD * PER_RANK) % CLASSES


def step(models, loss_funcs, miner, x, y):
    emb = models["embedder"](models["trunk"](x))
    loss = loss_funcs["metric_loss"](emb, y, miner(emb, y))
    loss.backward()


def grads(parts):
    named = {f"{k}.{n}": p for k, m in parts.models.items() for n, p in m.named_parameters()}
    named["proxies"] = parts.loss_funcs["metric_loss"].proxies
    return {k: p.grad.clone() for k, p in named.items()}, parts.loss_funcs["metric_loss"].proxies.detach().clone()


def _worker(rank, out_dir):
    parts = make_parts(loss_seed=100 + rank)
    models, loss_funcs, miner = distribute(parts, Dist(rank, WORLD, 0), torch.device("cpu"))
    assert isinstance(models["trunk"], torch.nn.parallel.DistributedDataParallel)
    x, y = batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    step(models, loss_funcs, miner, x[rows], y[rows])
    torch.save(grads(parts), f"{out_dir}/rank{rank}.pt")


def test_wrapped_parts_give_the_gradients_of_the_whole_batch(tmp_path):
    spawn_gloo(_worker, tmp_path, WORLD)
    single = make_parts(loss_seed=100)  # rank 0's proxies
    x, y = batch()
    step(single.models, single.loss_funcs, single.miner, x, y)
    expected, proxies = grads(single)
    for rank in range(WORLD):
        got, got_proxies = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got_proxies, proxies, rtol=0, atol=0)
        assert set(got) == set(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12, msg=name)


def _refusing_worker(rank, out_dir):
    from pml_regularizers.bench import UserError

    def refuse():
        raise UserError(f"refused by rank {rank}")

    try:
        Dist(rank, WORLD, 0).on_main(refuse)
    except UserError as err:
        Path(out_dir, f"rank{rank}.txt").write_text(str(err))


def test_an_error_of_rank_0_reaches_every_rank(tmp_path):
    # rank 0 alone locks the folder and checks its config: the other ranks must raise its error
    # rather than wait for it at the next barrier
    spawn_gloo(_refusing_worker, tmp_path, WORLD)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD)] == ["refused by rank 0"] * WORLD


def test_torchrun_with_two_gloo_processes_runs_an_experiment(tmp_path):
    # patience=1: only rank 0 validates, so every rank must take its early-stopping decision from
    # rank 0's state; one deciding from its own copy would leave after epoch 1 and hang the others.
    args = tiny(
        tmp_path, "seeds=1", "cv_folds=2", "sampler=m_per_class", "miner=multi_similarity", "device=cpu", "patience=1"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pml_regularizers.bench",
            "run",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("full report: ") == 1  # only rank 0 reports
    exp_dir = tmp_path / "runs" / "glyphs-proxy_anchor-multi_similarity-linear"
    results = json.loads((exp_dir / "results.json").read_text())
    assert results["world_size"] == 2
    kinds = {(r["split"], r["embedding"]) for r in results["records"]}
    assert kinds == {("val", "separated"), ("test", "separated"), ("test", "concatenated")}
    for r in results["records"]:
        assert 0.0 <= r["metrics"]["mean_average_precision_at_r"] <= 1.0
    for fold in (0, 1):
        state = torch.load(exp_dir / "seed_0" / f"fold_{fold}" / "checkpoint_latest.pt", weights_only=True)
        assert state["state"]["epoch"] == 2 and state["state"]["done"]
    assert (exp_dir / ".pml-bench.lock").read_text() == ""  # rank 0 alone locked it, and let it go
