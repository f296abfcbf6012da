"""torchvision and timm trunks: the classifier removed, output_size against the widths and
parameter counts torchvision documents, train and eval outputs, the stem for gray images,
pretrained weights from the library's cache and offline, config files, and BatchNorm freezing
through PML's trainer."""

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from pml_regularizers.bench import load_spec
from pml_regularizers.bench.models import WeightsDownloadError, timm_trunk, torchvision_trunk

models = pytest.importorskip("torchvision.models")
# torchvision's notice that GoogLeNet's and Inception v3's default initialisation will change
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning"),
]

# name, input side, model_kwargs, the classifier torchvision defines (where it sits differs:
# the trunk finds it without a table), and its input width as torchvision documents it
ARCHITECTURES = [
    ("resnet18", 32, None, "fc", 512),
    ("resnet50", 32, None, "fc", 2048),
    ("googlenet", 32, None, "fc", 1024),
    ("inception_v3", 75, None, "fc", 2048),
    ("mobilenet_v3_small", 32, None, "classifier.3", 1024),  # classifier[0] (576 -> 1024) stays
    ("efficientnet_b0", 32, None, "classifier.1", 1280),
    ("convnext_tiny", 32, None, "classifier.2", 768),  # after its LayerNorm, which stays
    ("squeezenet1_1", 32, None, "classifier.1", 512),  # a 1x1 convolution, not a Linear
    # ViT-B/16 at its usual 224 px takes several seconds on a CPU; at 32 px (2 x 2 patches, set
    # through model_kwargs) it has the same parameters but runs in a fraction of a second.
    ("vit_b_16", 32, {"image_size": 32}, "heads.head", 768),
]


def _offline(monkeypatch):
    """Make every attempt to open a network connection fail as it does without a network;
    return the list the attempts are recorded in."""
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args[:1])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (offline test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return attempts


@pytest.mark.parametrize("name, side, model_kwargs, head, width", ARCHITECTURES)
def test_trunk_features_in_train_and_eval_mode(name, side, model_kwargs, head, width):
    torch.manual_seed(0)
    trunk = torchvision_trunk(name, model_kwargs=model_kwargs)
    assert trunk.output_size == width
    assert trunk.training
    x = torch.randn(2, 3, side, side)
    for mode in (True, False):
        out = trunk.train(mode)(x)
        assert type(out) is torch.Tensor  # not GoogLeNet's or Inception's train-mode namedtuple
        assert out.shape == (2, width) and out.dtype == torch.float32


@pytest.mark.parametrize("name, side, model_kwargs, head, width", ARCHITECTURES)
def test_no_classifier_parameters_remain(name, side, model_kwargs, head, width):
    trunk = torchvision_trunk(name, model_kwargs=model_kwargs)
    assert isinstance(trunk.get_submodule(head), nn.Identity)
    full = models.get_model(name, **(model_kwargs or {}))
    # torchvision's documented parameter count of the classification model (auxiliary
    # classifiers included where its weights have them: Inception v3's, not GoogLeNet's), less
    # the classifier's width x 1000 weights and 1000 biases
    documented = models.get_model_weights(name).DEFAULT.meta["num_params"]
    if name == "inception_v3":
        documented -= sum(p.numel() for p in full.AuxLogits.parameters())
    if name == "vit_b_16":  # 224 px documented: 14 x 14 + 1 position embeddings, here 2 x 2 + 1
        documented -= (197 - 5) * 768
    assert sum(p.numel() for p in trunk.parameters()) == documented - (width * 1000 + 1000)
    trunk_keys = set(trunk.state_dict())
    assert trunk_keys < set(full.state_dict())
    assert not any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in trunk_keys)


def test_gray_stem_sums_the_rgb_filters():
    torch.manual_seed(0)
    rgb = torchvision_trunk("resnet18")
    torch.manual_seed(0)
    gray = torchvision_trunk("resnet18", in_channels=1)
    torch.manual_seed(0)
    five = torchvision_trunk("resnet18", in_channels=5)
    w = rgb.conv1.weight
    assert torch.equal(gray.conv1.weight, w.sum(dim=1, keepdim=True))
    assert torch.allclose(five.conv1.weight, torch.cat([w, w[:, :2]], dim=1) * 3 / 5)
    assert gray.conv1.in_channels == 1
    x = torch.rand(2, 1, 32, 32)
    rgb.eval(), gray.eval()
    # a gray image through the gray stem = the same image repeated in R, G and B through the RGB one
    assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)
    assert five.eval()(torch.rand(2, 5, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet_18", {}, "did you mean resnet18"),
        ("fasterrcnn_resnet50_fpn", {}, "classification model"),  # a torchvision detection model
        ("resnet18", {"pretrained": "IMAGENET1K_V9"}, "IMAGENET1K_V1, DEFAULT"),
        ("resnet18", {"pretrained": 1}, "pretrained must be"),
        ("resnet18", {"pretrained": True, "weights": "w.pt"}, "either pretrained or weights"),
        ("resnet18", {"in_channels": 0}, "in_channels"),
        ("resnet18", {"model_kwargs": {"weights": None}}, "model_kwargs may not set weights"),
        ("googlenet", {"in_channels": 1, "model_kwargs": {"transform_input": True}}, "in_channels"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        torchvision_trunk(name, **kwargs)


def _cache_weights(monkeypatch, tmp_path: Path, name: str, model: nn.Module) -> dict:
    """Put ``model``'s state dict where torch's hub cache holds ``name``'s DEFAULT weights, so
    that pretrained=True reads it without a download; return it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = models.get_model_weights(name).DEFAULT.url
    target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    state = model.state_dict()
    torch.save(state, target)
    return state


def test_pretrained_reads_torchvisions_default_weights(monkeypatch, tmp_path):
    attempts = _offline(monkeypatch)
    torch.manual_seed(1)
    state = _cache_weights(monkeypatch, tmp_path, "resnet50", models.resnet50())
    trunk = torchvision_trunk("resnet50", pretrained=True)
    assert attempts == []
    assert trunk.output_size == 2048
    assert torch.equal(trunk.conv1.weight, state["conv1.weight"])
    assert torch.equal(trunk.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])


def test_pretrained_googlenet_is_set_up_as_torchvision_does(monkeypatch, tmp_path):
    _offline(monkeypatch)
    # torchvision's GoogLeNet weights file has the auxiliary classifiers (it loads them, then
    # drops them) and the weights run with transform_input on
    full = models.GoogLeNet(aux_logits=True, init_weights=True)
    state = _cache_weights(monkeypatch, tmp_path, "googlenet", full)
    trunk = torchvision_trunk("googlenet", pretrained=True)
    assert trunk.transform_input and not trunk.aux_logits
    assert trunk.aux1 is None and trunk.aux2 is None
    assert torch.equal(trunk.inception5b.branch1.conv.weight, state["inception5b.branch1.conv.weight"])
    assert trunk(torch.randn(2, 3, 32, 32)).shape == (2, 1024)


def test_pretrained_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    attempts = _offline(monkeypatch)
    with pytest.raises(WeightsDownloadError) as info:
        torchvision_trunk("resnet18", pretrained=True)
    message = str(info.value)
    assert attempts  # it tried, and the (simulated) missing network stopped it
    assert "'resnet18'" in message and "could not be downloaded" in message
    assert "https://download.pytorch.org/models/resnet18-" in message
    assert "weights: PATH" in message
    assert isinstance(info.value, OSError)


def test_timm_pretrained_offline_is_one_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    _offline(monkeypatch)
    # the Hub client's offline mode fails at once instead of retrying the connection for a minute
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsDownloadError, match=r"'resnet18' could not be downloaded.*weights: PATH"):
        timm_trunk("resnet18", pretrained=True)


@pytest.mark.parametrize(
    "overrides, width",
    [
        (["trunk=torchvision"], 2048),
        (["trunk=torchvision", "trunk.name=googlenet"], 1024),
        (["trunk=timm"], 512),
    ],
)
def test_trunk_configs_instantiate(overrides, width):
    if "trunk=timm" in overrides:
        pytest.importorskip("timm")
    spec = load_spec(overrides)
    trunk = spec.models.trunk.build()
    assert trunk.output_size == width
    channels = spec.models.trunk.get("in_channels")
    assert trunk.eval()(torch.randn(2, channels, 32, 32)).shape == (2, width)


@pytest.mark.parametrize("freeze", [True, False])
def test_pml_freezes_trunk_batchnorm_as_the_benchmarker_did(freeze):
    # PML's freeze_trunk_batchnorm (what powerful-benchmarker passed its freeze_batchnorm to)
    # keeps the BatchNorm running statistics but still trains the BatchNorm scale and shift
    from pytorch_metric_learning import losses, trainers

    torch.manual_seed(0)
    trunk = torchvision_trunk("resnet18")
    bn = trunk.layer1[0].bn1
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 32, 32), torch.arange(16) % 4)
    trainer = trainers.MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        batch_size=16,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        dataset=data,
        iterations_per_epoch=1,
        freeze_trunk_batchnorm=freeze,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
    )
    trainer.train(num_epochs=1)
    assert torch.equal(bn.running_mean, before["running_mean"]) == freeze
    assert torch.equal(bn.num_batches_tracked, before["num_batches_tracked"]) == freeze
    assert not torch.equal(bn.weight, before["weight"])  # trained either way
    assert bn.weight.requires_grad
