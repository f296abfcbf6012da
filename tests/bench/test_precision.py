"""Mixed precision in the runner: the trunk under autocast with float32 features out, the float16
gradient scaler of the runner's trainer adapter, and tiny runs end to end in bf16 and fp16 on the
CPU."""

import json
import math

import pytest
import torch
from pytorch_metric_learning import losses, trainers

from pml_regularizers.bench import ConfigError, load_spec, run_experiment
from pml_regularizers.bench.models.precision import AutocastTrunk, autocast_dtype
from pml_regularizers.bench.protocol.trainer import bench_trainer_class

from .test_runner import tiny


def conv_trunk():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_trunk_runs_under_autocast_and_hands_on_float32(dtype):
    trunk = conv_trunk()
    x = torch.randn(4, 3, 16, 16)
    inner = {}
    trunk.register_forward_hook(lambda m, i, out: inner.update(dtype=out.dtype))
    out = AutocastTrunk(trunk, "cpu", dtype, channels_last=False)(x)
    assert inner["dtype"] == dtype and out.dtype == torch.float32
    torch.testing.assert_close(out, trunk(x), rtol=5e-2, atol=5e-2)
    assert not torch.equal(out, trunk(x))  # it did run in half precision


def test_channels_last_input_and_no_autocast_for_fp32():
    trunk = conv_trunk().to(memory_format=torch.channels_last)
    seen = {}
    trunk[0].register_forward_pre_hook(
        lambda m, args: seen.update(channels_last=args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 16, 16)
    out = AutocastTrunk(trunk, "cpu", None, channels_last=True)(x)
    assert seen["channels_last"]
    torch.testing.assert_close(out, trunk(x.contiguous()), rtol=1e-6, atol=1e-6)
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        autocast_dtype("fp8")


def test_the_grad_scaler_scales_the_loss_and_skips_steps_that_overflow():
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.arange(16) % 4)
    trunk = conv_trunk()
    optimizer = torch.optim.SGD(trunk.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer = bench_trainer_class(trainers.MetricLossOnly)(
        models={"trunk": AutocastTrunk(trunk, "cpu", torch.float16, False)},
        optimizers={"trunk_optimizer": optimizer},
        batch_size=16,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        dataset=data,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        grad_scaler=scaler,
    )
    before = [p.detach().clone() for p in trunk.parameters()]
    trainer.train_epoch(1)
    assert any(not torch.equal(a, b) for a, b in zip(before, trunk.parameters()))
    # an overflowing step is skipped and halves the scale
    trunk[0].weight.register_hook(lambda g: torch.full_like(g, math.inf))
    before = [p.detach().clone() for p in trunk.parameters()]
    scale = scaler.get_scale()
    trainer.train_epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(before, trunk.parameters()))
    assert scaler.get_scale() == scale / 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.slow
def test_tiny_runs_in_half_precision(tmp_path, precision):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, f"precision={precision}", "seeds=1", "cv_folds=2")))
    records = json.loads((exp_dir / "results.json").read_text())["records"]
    assert all(math.isfinite(v) for r in records for v in r["metrics"].values())
    checkpoint = torch.load(exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt", weights_only=True)
    assert ("grad_scaler" in checkpoint["optimizers"]) == (precision == "fp16")


@pytest.mark.slow
def test_precision_and_channels_last_are_checked():
    with pytest.raises(ConfigError, match="precision must be fp32, bf16 or fp16, got 'fp8'"):
        load_spec(["precision=fp8"])
    with pytest.raises(ConfigError, match="channels_last must be auto, true or false"):
        load_spec(["channels_last=sometimes"])
    with pytest.raises(ConfigError, match="num_workers must be auto or an int >= 0"):
        load_spec(["num_workers=many"])
