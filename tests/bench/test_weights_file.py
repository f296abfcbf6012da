"""Local weights files (``weights: PATH``): round trips into fresh trunks, the layouts accepted
(trunk or full model, nested, DDP-prefixed, safetensors, RGB stem for a gray trunk), and the
errors for files that do not fit or cannot be read safely."""

from pathlib import Path

import pytest
import torch
from torch import nn

from pml_regularizers.bench.models import Conv4, timm_trunk, torchvision_trunk
from pml_regularizers.bench.models.weights_file import load_weights_file, read_state_dict

models = pytest.importorskip("torchvision.models")
# GoogLeNet's own initialisation (truncated normal, its auxiliary classifiers included) takes a
# second on a CPU; PyTorch's default one is as good a starting point for loading a file
FAST_INIT = {"googlenet": {"init_weights": False}}

pytestmark = pytest.mark.slow


def _save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


def _leave_mark(path: str) -> None:  # what unpickling the payload below would run
    Path(path).write_text("ran")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return _leave_mark, (str(self.marker),)


@pytest.mark.parametrize(
    "name, suffix",
    [
        ("resnet18", ".pt"),
        ("resnet18", ".safetensors"),
        ("googlenet", ".pth"),
        ("mobilenet_v3_small", ".safetensors"),
    ],
)
def test_trunk_state_dict_round_trip(tmp_path, name, suffix):
    x = torch.randn(2, 3, 32, 32)
    kwargs = FAST_INIT.get(name)
    torch.manual_seed(0)
    source = torchvision_trunk(name, model_kwargs=kwargs).eval()
    path = _save(source.state_dict(), tmp_path / f"trunk{suffix}")
    torch.manual_seed(1)  # another initialisation, which the file replaces
    loaded = torchvision_trunk(name, weights=path, model_kwargs=kwargs).eval()
    assert torch.equal(loaded(x), source(x))
    for key, value in source.state_dict().items():  # every parameter and buffer
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_full_classification_model_state_dict(tmp_path, name):
    kwargs = FAST_INIT.get(name)
    torch.manual_seed(0)
    full = models.get_model(name, **(kwargs or {})).eval()  # GoogLeNet keeps aux1 and aux2
    path = _save(full.state_dict(), tmp_path / "full.pth")
    trunk = torchvision_trunk(name, weights=path, model_kwargs=kwargs).eval()
    assert any(k.startswith("fc.") for k in full.state_dict())
    if name == "googlenet":
        assert any(k.startswith("aux1.") for k in full.state_dict())
    full.fc = nn.Identity()  # the reference: torchvision's model, classifier taken off by hand
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(trunk(x), full(x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DDP
    ],
    ids=["state_dict", "model", "ddp_prefix"],
)
def test_common_checkpoint_layouts(tmp_path, wrap):
    torch.manual_seed(0)
    source = torchvision_trunk("resnet18").eval()
    path = _save(wrap(source.state_dict()), tmp_path / "ckpt.pth")
    loaded = torchvision_trunk("resnet18", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), source(x))


def test_rgb_weights_for_a_gray_trunk(tmp_path):
    torch.manual_seed(0)
    full = models.resnet18().eval()
    path = _save(full.state_dict(), tmp_path / "rgb.pt")
    gray = torchvision_trunk("resnet18", in_channels=1, weights=path).eval()
    assert torch.equal(gray.conv1.weight, full.conv1.weight.sum(dim=1, keepdim=True))
    full.fc = nn.Identity()
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(gray(x), full(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_timm_round_trips(tmp_path):
    timm = pytest.importorskip("timm")
    x = torch.randn(2, 1, 32, 32)
    torch.manual_seed(0)
    source = timm_trunk("resnet18").eval()
    loaded = timm_trunk("resnet18", weights=_save(source.state_dict(), tmp_path / "t.safetensors"))
    assert torch.equal(loaded.eval()(x), source(x))
    # the full RGB classification model, into the gray trunk
    full = timm.create_model("resnet18").eval()
    gray = timm_trunk("resnet18", weights=_save(full.state_dict(), tmp_path / "full.pt")).eval()
    assert torch.equal(gray.conv1.weight, full.conv1.weight.sum(dim=1, keepdim=True))
    full.reset_classifier(0)
    assert torch.allclose(gray(x), full(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_wrong_keys_are_named(tmp_path):
    state = torchvision_trunk("resnet18").state_dict()
    del state["layer1.0.conv1.weight"]
    state["projection.weight"] = torch.zeros(3)
    path = _save(state, tmp_path / "keys.pt")
    with pytest.raises(ValueError) as info:
        torchvision_trunk("resnet18", weights=path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys layer1.0.conv1.weight;" in message
    assert "unexpected keys projection.weight" in message


def test_many_wrong_keys_are_shortened(tmp_path):
    path = _save(Conv4().state_dict(), tmp_path / "conv4.pt")
    with pytest.raises(ValueError, match=r"missing keys conv1\.weight, .* and \d+ more; unexpected"):
        torchvision_trunk("resnet18", weights=path)


def test_wrong_shape_is_named_and_nothing_is_loaded(tmp_path):
    trunk = torchvision_trunk("resnet18")
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = _save(state, tmp_path / "shape.pt")
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_weights_file(trunk, path)
    assert str(path) in str(info.value)
    assert "conv1.weight (file (64, 3, 3, 3), trunk (64, 3, 7, 7))" in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_integer_tensors_for_floating_parameters_are_refused_naming_keys(tmp_path, suffix):
    """A file whose float tensors were stored as int8 used to load by casting: conv weights
    became 0 and +-1."""
    trunk = torchvision_trunk("resnet18")
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    for key in ("conv1.weight", "fc.weight" if "fc.weight" in state else "layer1.0.conv1.weight"):
        state[key] = (state[key] * 100).to(torch.int8)
    path = _save(state, tmp_path / f"int8{suffix}")
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_weights_file(trunk, path)
    message = str(info.value)
    assert f"weights file {path} does not fit the trunk: tensors whose dtype cannot hold" in message
    assert "conv1.weight (file torch.int8, trunk torch.float32)" in message
    assert "layer1.0.conv1.weight (file torch.int8, trunk torch.float32)" in message
    assert all(torch.equal(v, before[k]) for k, v in trunk.state_dict().items())  # nothing loaded
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    state["bn1.num_batches_tracked"] = state["bn1.num_batches_tracked"].float()  # the other way round
    with pytest.raises(ValueError, match=r"bn1\.num_batches_tracked \(file torch\.float32, trunk torch\.int64\)"):
        load_weights_file(trunk, _save(state, tmp_path / f"float_counter{suffix}"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in trunk.state_dict().items()}
    load_weights_file(trunk, _save(half, tmp_path / f"half{suffix}"))  # another float width loads, cast
    assert trunk.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(trunk.conv1.weight, half["conv1.weight"].float())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_is_named(tmp_path, suffix):
    whole = _save(torchvision_trunk("resnet18").state_dict(), tmp_path / f"whole{suffix}")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match="is truncated or not a (PyTorch|safetensors) file") as info:
        torchvision_trunk("resnet18", weights=path)
    assert str(path) in str(info.value)
    assert "weights_only=False" not in str(info.value)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "marker"
    state = torchvision_trunk("resnet18").state_dict()
    path = tmp_path / "pickle.pth"
    torch.save({"state_dict": state, "config": _Payload(marker)}, path)
    with pytest.raises(ValueError) as info:
        torchvision_trunk("resnet18", weights=path)
    message = str(info.value)
    assert str(path) in message and "_leave_mark" in message
    assert "weights_only=False" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice hidden
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        ([1, 2, 3], "holds no state dict: .* found a list"),
        ({"epoch": 3}, r"holds no state dict: .* found a dict with keys 'epoch'"),
        ({}, "holds no state dict"),
    ],
)
def test_no_state_dict_is_named(tmp_path, content, match):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match):
        read_state_dict(path)


def test_other_files_are_named(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not weights")
    with pytest.raises(ValueError, match=f"weights file {junk} is truncated or not a PyTorch file"):
        read_state_dict(junk)
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=f"weights file {missing} does not exist"):
        torchvision_trunk("resnet18", weights=missing)
