"""Benchmark trunks: shapes against output_size, parameter counts by hand, timm and torchvision
handling without the libraries (the library trunks themselves: test_library_trunks.py)."""

import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from pml_regularizers.bench.models import MLP, Conv4, SmallResNet, timm_trunk, torchvision_trunk


@pytest.mark.parametrize("image_size", [16, 28, 32, 64, 84])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_conv4_output_matches_output_size(image_size, in_channels):
    model = Conv4(in_channels=in_channels, image_size=image_size).eval()
    out = model(torch.randn(3, in_channels, image_size, image_size))
    side = image_size // 16
    assert model.output_size == 64 * side * side
    assert out.shape == (3, model.output_size)


def test_conv4_parameter_count_by_hand():
    # per block: conv weight c_in*64*3*3, conv bias 64, BN weight and bias 2*64
    first = 1 * 64 * 9 + 64 + 2 * 64
    later = 64 * 64 * 9 + 64 + 2 * 64
    assert first == 768 and later == 37056
    model = Conv4(in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == first + 3 * later == 111936


def test_conv4_layer_sequence():
    kinds = [type(m) for m in Conv4().modules() if not isinstance(m, (nn.Sequential, Conv4))]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d] * 4


@pytest.mark.parametrize("kwargs", [{"image_size": 15}, {"in_channels": 0}, {"hidden": 2.5}])
def test_conv4_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Conv4(**kwargs)


@pytest.mark.parametrize("size", [16, 28, 33])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_small_resnet_output(size, in_channels):
    model = SmallResNet(in_channels=in_channels).eval()
    out = model(torch.randn(2, in_channels, size, size))
    assert model.output_size == 128
    assert out.shape == (2, 128)


def test_small_resnet_downsamples_twice_and_has_residual_blocks():
    model = SmallResNet(widths=(8, 16, 24), blocks_per_stage=1)
    convs3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    strides = [m.stride[0] for m in convs3x3]
    # stem, then (conv, conv) per block; the first conv of stages 2 and 3 has stride 2
    assert strides == [1, 1, 1, 2, 1, 2, 1]
    assert model.output_size == 24
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 24)


def test_small_resnet_rejects_empty_widths():
    with pytest.raises(ValueError, match="widths"):
        SmallResNet(widths=())


@pytest.mark.parametrize("hidden", [(), (32,), (64, 16)])
def test_mlp_flattens_and_reports_output_size(hidden):
    model = MLP(in_features=2 * 5 * 3, hidden=hidden)
    out = model(torch.randn(4, 2, 5, 3))
    assert model.output_size == (hidden[-1] if hidden else 30)
    assert out.shape == (4, model.output_size)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == list(zip((30, *hidden)[:-1], hidden))


def test_mlp_without_hidden_is_flatten():
    x = torch.randn(3, 4, 5)
    assert torch.equal(MLP(in_features=20, hidden=[])(x), x.reshape(3, 20))


def test_mlp_rejects_bad_width():
    with pytest.raises(ValueError, match="hidden"):
        MLP(in_features=8, hidden=[16, 0])


def test_timm_missing_gives_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    message = r'timm trunks need timm \(and torchvision\): pip install "pml-regularizers\[vision\]"'
    with pytest.raises(ImportError, match=message):
        timm_trunk("resnet18")


def test_timm_trunk_passes_arguments_and_sets_output_size(monkeypatch):
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        model = nn.Linear(3, 7)
        model.num_features = 7
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model = timm_trunk("fake_net", in_channels=3)
    assert model.output_size == 7
    assert calls == [("fake_net", {"pretrained": False, "num_classes": 0, "in_chans": 3})]
    timm_trunk("fake_net", pretrained=True, model_kwargs={"drop_path_rate": 0.1})
    assert calls[-1] == (
        "fake_net",
        {"drop_path_rate": 0.1, "pretrained": True, "num_classes": 0, "in_chans": 1},
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pretrained": "a1_in1k"}, "pretrained must be true or false"),
        ({"pretrained": True, "weights": "w.pt"}, "either pretrained or weights"),
        ({"in_channels": 0}, "in_channels"),
        ({"model_kwargs": {"num_classes": 10}}, "model_kwargs may not set num_classes"),
    ],
)
def test_timm_trunk_rejects_bad_arguments(monkeypatch, kwargs, match):
    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=None))
    with pytest.raises(ValueError, match=match):
        timm_trunk("fake_net", **kwargs)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed (it needs torchvision)")
@pytest.mark.slow
def test_real_timm_trunk_output_size():
    try:
        model = timm_trunk("resnet18", in_channels=1).eval()
    except ImportError as err:
        pytest.skip(f"timm not importable: {err}")
    out = model(torch.randn(2, 1, 64, 64))
    assert model.output_size == 512  # resnet18's pooled width
    assert out.shape == (2, model.output_size)
    assert not any(k.startswith("fc.") for k in model.state_dict())


def test_torchvision_missing_gives_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    message = r'torchvision trunks need torchvision: pip install "pml-regularizers\[vision\]"'
    with pytest.raises(ImportError, match=message):
        torchvision_trunk("resnet18")
