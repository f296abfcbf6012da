"""pml-bench end to end on natural images: generated CUB, Cars196, SOP and class-folder trees of real
RGB, grayscale, CMYK, RGBA and palette files, a torchvision ResNet-18 at a small size, and the
presets. Colour reaches the trunk, evaluation is deterministic, training augmentation follows the
(seed, fold, epoch) seeding whatever the number of DataLoader workers, and local weights load."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pml_regularizers.bench import ConfigError, load_experiment_data, load_spec, run_experiment, torch_dataset
from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.protocol.preflight import check_input

from .trees import TREE_WRITERS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

SMALL = [
    "trunk=torchvision",
    "trunk.name=resnet18",
    "dataset.size=32",
    "dataset.resize=36",
    "embedding_size=8",
    "batch_size=8",
    "epochs=1",
    "seeds=1",
    "num_workers=0",
]


def natural(tmp_path, name, *extra, classes=8, per_class=4):
    root = TREE_WRITERS[name](tmp_path / name, classes=classes, per_class=per_class)
    return [f"dataset={name}", f"dataset.root={root}", f"output_dir={tmp_path / 'runs'}", *SMALL, *extra]


def records(exp_dir):
    return json.loads((exp_dir / "results.json").read_text())["records"]


@pytest.mark.parametrize("name", ["cub", "cars196", "sop", "folder"])
def test_pml_bench_run_on_each_natural_layout(tmp_path, capsys, name):
    assert cli_main(["run", *natural(tmp_path, name)]) == 0
    exp_dir = tmp_path / "runs" / f"{name}-resnet18-proxy_anchor-linear"
    (record,) = records(exp_dir)
    assert record["split"] == "test" and record["embedding"] == "single"
    assert 0.0 <= record["metrics"]["mean_average_precision_at_r"] <= 1.0
    assert all(math.isfinite(v) for v in record["metrics"].values())
    saved = torch.load(exp_dir / "seed_0" / "test_embeddings.pt", weights_only=True)
    assert saved["embeddings"].shape == (16, 8)  # 4 test classes x 4 images


def test_colour_reaches_the_trunk_and_evaluation_is_deterministic(tmp_path):
    spec = load_spec(natural(tmp_path, "cub"))
    data = load_experiment_data(spec.data)
    test = torch_dataset(data.subset([4, 5, 6, 7]), spec.data, train=False)
    images = torch.stack([test[i][0] for i in range(len(test))])
    assert images.shape == (16, 3, 32, 32)
    assert not torch.allclose(images[:, 0], images[:, 1])  # R and G differ: not gray copies
    again = torch.stack([test[i][0] for i in range(len(test))])
    assert torch.equal(images, again)
    train = torch_dataset(data.subset([0, 1, 2, 3]), spec.data, train=True)
    crops = {train[(0, seed)][0].sum().item() for seed in range(6)}
    assert len(crops) > 1  # training crops are random


def test_training_follows_the_seeds_whatever_the_workers(tmp_path):
    metrics = []
    for workers in (0, 2):
        cfg = load_spec(
            natural(tmp_path, "folder", f"num_workers={workers}", f"experiment=w{workers}", "epochs=2", "cv_folds=2")
        )
        metrics.append({(r["split"], r["embedding"]): r["metrics"] for r in records(run_experiment(cfg))})
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    "preset",
    ["reality_check_cub", "reality_check_cars196", "reality_check_sop", "dvml_cub", "dvml_cars196", "dvml_sop"],
)
def test_every_preset_composes_with_only_the_root_added(tmp_path, preset):
    spec = load_spec([f"preset={preset}", f"dataset.root={tmp_path}"])
    models, protocol = spec.models, spec.protocol
    check_input(spec.data, models.trunk)
    assert spec.data.pipeline == "natural" and spec.data.size == 224 and spec.data.resize == 256
    assert models.trunk.get("pretrained") is True and models.freeze_trunk_bn is True and protocol.cv_folds == 4
    optimizer = models.optimizer.component
    if preset.startswith("reality_check"):
        assert models.sampler is not None
        trunk = (models.trunk.get("name"), models.embedding_size, protocol.batch_size, models.sampler.get("m"))
        assert trunk == ("resnet50", 128, 32, 4)
        assert optimizer.target == "torch.optim.RMSprop" and optimizer.get("lr") == 1e-6
    else:
        assert (models.trunk.get("name"), models.embedding_size, protocol.batch_size) == ("googlenet", 512, 120)
        assert spec.choices["trainer"] == "dvml" and models.trainer.get("num_samples") == 20
        assert optimizer.get("lr") == 1e-4


@pytest.mark.parametrize("preset", ["reality_check_cub", "dvml_cub"])
def test_a_preset_runs_end_to_end_at_a_small_size(tmp_path, preset):
    root = TREE_WRITERS["cub"](tmp_path / "cub", classes=8, per_class=4)
    overrides = [
        f"preset={preset}",
        f"dataset.root={root}",
        f"output_dir={tmp_path / 'runs'}",
        "trunk.name=resnet18",
        "trunk.pretrained=false",
        "dataset.size=32",
        "dataset.resize=36",
        "embedding_size=8",
        "batch_size=8",
        "epochs=1",
        "iterations_per_epoch=2",
        "cv_folds=2",
        "seeds=1",
        "num_workers=0",
    ]
    if preset.startswith("dvml"):
        overrides.append("trainer.num_samples=2")
    exp_dir = run_experiment(load_spec(overrides))
    kinds = {(r["split"], r["embedding"]) for r in records(exp_dir)}
    assert kinds == {("val", "separated"), ("test", "separated"), ("test", "concatenated")}


def test_local_weights_reach_the_run(tmp_path):
    from pml_regularizers.bench.models import torchvision_trunk

    torch.manual_seed(1)
    source = torchvision_trunk("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    trunk = load_spec(natural(tmp_path, "cub", f"trunk.weights={path}")).models.trunk.build().eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(trunk(x), source.eval()(x), rtol=0, atol=0)
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="bad.pt"):
        run_experiment(load_spec(natural(tmp_path, "cub", f"trunk.weights={bad}", "experiment=bad")))


def test_dataloader_workers_leave_no_traceback_over_folds_and_seeds(tmp_path):
    """Persistent workers of one fold's loader used to be stopped by the forked workers of a later
    one at exit: four tracebacks on stderr ("can only test a child process", "Bad file descriptor",
    "semaphore or lock released too many times") after a run that succeeded."""
    args = natural(tmp_path, "cub", "cv_folds=2", "seeds=2", "num_workers=2")
    done = subprocess.run(
        [sys.executable, "-m", "pml_regularizers.bench", "run", *args], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("seed ")]) == 4
