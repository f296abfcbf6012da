"""The natural-image pipeline: file listing (FileSet, list_*), the RGB dataset decoded per item,
the torchvision transforms, the seeded training loader and worker count, the registry's
``pipeline="natural"``, and bounded memory.

Trees are generated in the exact CUB/Cars196/SOP/folder layouts with real JPEG (RGB, L, CMYK) and
PNG (RGBA, P) files (``trees.py``). References are independent of the code under test: listings
parsed here from the annotation files, colours from ImageNet's normalisation constants and PIL's
luma formula, geometry from a two-colour image."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_metric_learning.samplers import MPerClassSampler

from pml_regularizers.bench.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIPELINES,
    FileSet,
    ImageSet,
    NaturalImageDataset,
    list_cars196,
    list_cub,
    list_image_folder,
    list_sop,
    load_cars196,
    load_cub,
    load_dataset,
    load_image_folder,
    load_sop,
    natural_transforms,
)
from pml_regularizers.bench.data.cache import files_key
from pml_regularizers.bench.data.loader import SeededSampler, auto_num_workers, evaluation_loader, training_loader

from .trees import (
    MODES,
    TREE_WRITERS,
    cars196_names,
    write_bulk_folder,
    write_folder_tree,
)

LISTERS = {"cub": list_cub, "cars196": list_cars196, "sop": list_sop, "folder": list_image_folder}
LOADERS = {"cub": load_cub, "cars196": load_cars196, "sop": load_sop, "folder": load_image_folder}
CLASSES, PER_CLASS = 4, 3


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One tree of each layout: 4 classes x 3 images, the five modes in turn."""
    base = tmp_path_factory.mktemp("natural_trees")
    return {name: write(base / name, CLASSES, PER_CLASS) for name, write in TREE_WRITERS.items()}


def reference_listing(name, root):
    """(paths, class name of each) parsed straight from the layout, in the loaders' order."""
    if name == "cub":
        base = root / "CUB_200_2011"
        rows = [line.split() for line in (base / "images.txt").read_text().splitlines()]
        paths = [base / "images" / relative for _, relative in rows]
        return paths, [path.parent.name for path in paths]
    if name == "cars196":
        names = (root / "names.csv").read_text().splitlines()
        paths, keys = [], []
        for split in ("train", "test"):
            for line in (root / f"anno_{split}.csv").read_text().splitlines():
                file, *_, class_id = line.split(",")
                folder = names[int(class_id) - 1].replace("/", "-")
                paths.append(root / "car_data" / "car_data" / split / folder / file)
                keys.append(f"{int(class_id):03d}.{names[int(class_id) - 1]}")
        return paths, keys
    if name == "sop":
        base = root / "Stanford_Online_Products"
        paths, keys = [], []
        for split in ("train", "test"):
            for line in (base / f"Ebay_{split}.txt").read_text().splitlines()[1:]:
                _, class_id, _, relative = line.split()
                paths.append(base / relative)
                keys.append(f"{int(class_id):05d}")
        return paths, keys
    paths = sorted(p for p in root.glob("*/*") if p.suffix in (".jpg", ".png"))
    return paths, [path.parent.name for path in paths]


def image_mode(path):
    with Image.open(path) as image:
        return image.mode


def as_image(tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undo the normalisation: pixel values in [0, 1]."""
    return tensor * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)


# ---------------------------------------------------------------------------------------------
# FileSet and the listing functions


def test_file_set_subset_relabels_in_given_order_and_validates():
    paths = [Path(f"/data/{i}.jpg") for i in range(6)]
    files = FileSet(paths, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    assert files.num_classes == 3 and files.class_keys == ["a", "b", "c", "a", "b", "c"]
    sub = files.subset([2, 0])
    assert sub.class_names == ["c", "a"] and sub.labels.tolist() == [1, 0, 1, 0]
    assert sub.paths == [paths[0], paths[2], paths[3], paths[5]]
    for bad in ([0, 0], [3], [-1]):
        with pytest.raises(ValueError, match="class_ids"):
            files.subset(bad)
    with pytest.raises(ValueError, match="int64"):
        FileSet(paths[:2], torch.tensor([0, 1.0]), ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        FileSet(paths[:2], torch.tensor([0, 1, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="0..1"):
        FileSet(paths[:2], torch.tensor([0, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="list of pathlib.Path, got tuple"):
        FileSet(tuple(paths[:2]), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="pathlib.Path items, got '/data/x.jpg'"):
        FileSet([paths[0], "/data/x.jpg"], torch.tensor([0, 1]), ["a", "b"])
    made = FileSet.from_class_keys(paths[:3], ["owl", "cat", "owl"])
    assert made.class_names == ["cat", "owl"] and made.labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="3 paths but 2 class keys"):
        FileSet.from_class_keys(paths[:3], ["owl", "cat"])


@pytest.mark.parametrize("name", list(TREE_WRITERS))
def test_listing_matches_the_layout_and_the_grayscale_path(trees, name, monkeypatch):
    root = trees[name]
    gray = LOADERS[name](root, size=4)

    def no_decoding(*args, **kwargs):
        raise AssertionError("listing opened an image")

    monkeypatch.setattr(Image, "open", no_decoding)
    files = LISTERS[name](root)
    monkeypatch.undo()
    paths, keys = reference_listing(name, root)
    assert files.paths == paths and files.class_keys == keys
    assert len(files.paths) == CLASSES * PER_CLASS
    assert files.class_names == gray.class_names == sorted(set(keys))
    assert torch.equal(files.labels, gray.labels)
    assert {image_mode(path) for path in files.paths} == set(MODES)
    if name == "cars196":
        assert files.class_names[1] == "002." + cars196_names(CLASSES)[1]  # keeps its "/"


@pytest.mark.parametrize("name", list(TREE_WRITERS))
def test_grayscale_cache_keys_are_unchanged(trees, name, tmp_path):
    """The cache file name is still <prefix>-<size>px-<files_key(paths, prefix, size, keys)>.pt,
    so caches written before the natural pipeline existed are found again."""
    paths, keys = reference_listing(name, trees[name])
    LOADERS[name](trees[name], size=6, cache_dir=tmp_path)
    expected = f"{name}-6px-{files_key(paths, name, 6, keys)}.pt"
    assert [p.name for p in tmp_path.iterdir()] == [expected]


@pytest.mark.parametrize("name", list(TREE_WRITERS))
def test_listing_errors_are_the_grayscale_loaders(trees, name, tmp_path):
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    for call in (LISTERS[name], LOADERS[name]):
        with pytest.raises(NotADirectoryError, match=f"{a_file} is a file, not a folder"):
            call(a_file)
        with pytest.raises(FileNotFoundError, match="does not exist; expected"):
            call(tmp_path / "missing")
    if name == "folder":
        return  # a folder's listing is what it holds: no file can be missing from it
    root = TREE_WRITERS[name](tmp_path / "tree", classes=2, per_class=2)
    victim = LISTERS[name](root).paths[1]
    victim.unlink()
    for call in (LISTERS[name], LOADERS[name]):
        missing = f"1 of 4 image files are missing, first: {victim}"
        with pytest.raises(FileNotFoundError, match=missing):
            call(root)


def test_malformed_annotations_are_refused_by_listing(tmp_path):
    root = TREE_WRITERS["cub"](tmp_path / "cub", classes=2, per_class=2)
    labels = root / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("2 1\n", "2 one\n"))
    with pytest.raises(ValueError, match=r"image_class_labels\.txt, line 2"):
        list_cub(root)
    root = TREE_WRITERS["sop"](tmp_path / "sop", classes=2, per_class=2)
    (root / "Stanford_Online_Products" / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Ebay_test\.txt is missing"):
        list_sop(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no class folder with images"):
        list_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "class_a").mkdir()
    with pytest.raises(ValueError, match="1 class folder.* hold no image PIL opens: class_a"):
        list_image_folder(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# NaturalImageDataset and the transforms


@pytest.mark.parametrize("name", list(TREE_WRITERS))
def test_every_mode_arrives_as_an_rgb_float_crop(trees, name):
    files = LISTERS[name](trees[name])
    for train in (True, False):
        dataset = NaturalImageDataset(files, natural_transforms(train, crop=24, resize=28))
        assert len(dataset) == len(files.paths) and dataset.labels is files.labels
        for index in range(len(dataset)):
            image, label = dataset[(index, 7)] if train else dataset[index]
            assert type(image) is torch.Tensor and image.dtype == torch.float32
            assert image.shape == (3, 24, 24)
            assert isinstance(label, int) and label == int(files.labels[index])


def test_colour_reaches_the_output(tmp_path):
    """Pure red through every mode: the channels come out as ImageNet's normalisation of
    (1, 0, 0); the grayscale JPEG holds only the luma of red, in all three channels."""
    root = write_folder_tree(tmp_path, classes=1, per_class=len(MODES), colour=(255, 0, 0))
    files = list_image_folder(root)
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=16, resize=20))
    red = torch.tensor(
        [
            (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
            -IMAGENET_MEAN[1] / IMAGENET_STD[1],
            -IMAGENET_MEAN[2] / IMAGENET_STD[2],
        ]
    )
    luma = round(255 * 299 / 1000) / 255  # PIL's L = (299 R + 587 G + 114 B) / 1000
    gray = (luma - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    tolerance = 2 / 255 / min(IMAGENET_STD)  # JPEG may move a solid colour by a level or two
    assert [image_mode(path) for path in files.paths] == list(MODES)
    for index, mode in enumerate(MODES):
        image, _ = dataset[index]
        means = image.mean(dim=(1, 2))
        expected = gray if mode == "L" else red
        torch.testing.assert_close(means, expected, rtol=0, atol=tolerance, msg=f"mode {mode}")
        assert float(image.std(dim=(1, 2)).max()) < tolerance  # still a solid colour
    assert red[0] > 2.2 and red[1] < -2.0 and red[2] < -1.8  # the channels differ


def test_grayscale_images_become_three_equal_channels(trees):
    files = list_image_folder(trees["folder"])
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=24, resize=28))
    gray_items = [i for i, path in enumerate(files.paths) if image_mode(path) == "L"]
    assert gray_items
    for index in gray_items:
        pixels = as_image(dataset[index][0])
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5)
        assert torch.allclose(pixels[1], pixels[2], atol=1e-5)


def test_evaluation_resizes_the_shorter_side_then_crops_the_center(tmp_path):
    """An 80 x 40 image, left half red and right half blue: Resize(20) makes it 40 x 20, and
    CenterCrop(16) keeps its columns 12..27, 8 red and then 8 blue."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40, 0] = 255
    pixels[:, 40:, 2] = 255
    path = tmp_path / "halves" / "x.png"
    path.parent.mkdir()
    Image.fromarray(pixels).save(path)
    files = list_image_folder(tmp_path)
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=16, resize=20))
    image = as_image(dataset[0][0])
    assert image.shape == (3, 16, 16)
    left, right = image[:, :, :6].mean(dim=(1, 2)), image[:, :, 10:].mean(dim=(1, 2))
    torch.testing.assert_close(left, torch.tensor([1.0, 0, 0]), atol=0.01, rtol=0)
    torch.testing.assert_close(right, torch.tensor([0, 0, 1.0]), atol=0.01, rtol=0)


def test_training_transform_is_random_seeded_and_leaves_the_global_generator_alone(trees):
    files = list_image_folder(trees["folder"])
    dataset = NaturalImageDataset(files, natural_transforms(True, crop=24))
    state = torch.get_rng_state()
    first = dataset[(2, 123)][0]
    assert torch.equal(torch.get_rng_state(), state)  # run under fork_rng
    assert torch.equal(dataset[(2, 123)][0], first)
    crops = {dataset[(2, seed)][0].numpy().tobytes() for seed in range(8)}
    assert len(crops) == 8
    torch.manual_seed(5)  # without a seed, the transform draws from torch's global generator
    unseeded = dataset[2][0]
    assert not torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    assert torch.equal(dataset[2][0], unseeded)


def test_evaluation_passes_are_equal_and_draw_nothing(trees):
    files = list_cub(trees["cub"])
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=24, resize=32))
    state = torch.get_rng_state()
    passes = [list(evaluation_loader(dataset, batch_size=5)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    assert [len(y) for _, y in passes[0]] == [5, 5, 2]  # in order, the last batch kept
    assert torch.cat([y for _, y in passes[0]]).tolist() == files.labels.tolist()
    for (x0, y0), (x1, y1) in zip(*passes):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_corrupt_and_unreadable_files_are_named(tmp_path, monkeypatch):
    root = write_folder_tree(tmp_path / "tree", classes=1, per_class=4, modes=("RGB", "RGBA"))
    files = list_image_folder(root)
    truncated, garbage, vanished, large = files.paths
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"not an image at all")
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=8, resize=8))
    vanished.unlink()
    for index, path in enumerate([truncated, garbage, vanished]):
        with pytest.raises(ValueError, match=f"cannot decode image {path}"):
            dataset[index]
    with pytest.raises(ValueError, match=f"cannot decode image {truncated}"):
        next(iter(training_loader(dataset, batch_size=4, sampler=range(4))))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # the decompression-bomb check
    with pytest.raises(ValueError, match=f"cannot decode image {large}"):
        dataset[3]


def test_dataset_holds_paths_and_labels_only(trees):
    files = list_sop(trees["sop"])
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=8, resize=8))
    assert [dataset.path(i) for i in range(len(dataset))] == files.paths
    payload = len(pickle.dumps(dataset)) - len(pickle.dumps(dataset.transform))
    assert payload < 200 * len(dataset) + 2000  # paths and labels, no pixels
    with pytest.raises(TypeError, match="transform must be callable"):
        NaturalImageDataset(files, transform=None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train": 1}, "train must be a bool"),
        ({"train": True, "crop": 0}, "crop must be a positive int"),
        ({"train": True, "crop": 22.5}, "crop must be a positive int"),
        ({"train": False, "resize": True}, "resize must be a positive int"),
        ({"train": False, "crop": 300}, r"crop \(300\) must be <= resize \(256\)"),
        ({"train": True, "mean": (0.5, 0.5)}, "mean must be a sequence of 3 numbers"),
        ({"train": True, "mean": "rgb"}, "mean must be a sequence of 3 numbers"),
        ({"train": True, "std": (0.2, float("nan"), 0.2)}, r"std\[1\] must be a finite"),
        ({"train": True, "std": (0.2, 0.0, 0.2)}, "std must be > 0"),
    ],
)
def test_natural_transforms_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        natural_transforms(**kwargs)


def test_training_crop_may_exceed_resize_and_outputs_crop_size(trees):
    files = list_image_folder(trees["folder"])
    transform = natural_transforms(True, crop=300, resize=256)
    assert NaturalImageDataset(files, transform)[(0, 1)][0].shape == (3, 300, 300)


@pytest.mark.slow
def test_package_imports_without_torchvision_and_names_the_extra():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torchvision"] = None  # makes any import of torchvision fail
        import pml_regularizers
        import pml_regularizers.bench.data as data
        import pml_regularizers.bench.data.loader
        try:
            data.natural_transforms(True)
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = 'pipeline needs torchvision; pip install "pml-regularizers[vision]"'
    assert f"ImportError: the natural-image {expected}" in result.stdout


# ---------------------------------------------------------------------------------------------
# SeededSampler, the loaders and the worker count


def epoch_batches(loader, global_seed, epoch):
    """What the runner does per epoch: reseed torch's global generator, then iterate."""
    torch.manual_seed(1000 * global_seed + epoch)
    batches = [(x.clone(), y.clone()) for x, y in loader]
    return batches, torch.get_rng_state()


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.mark.slow
def test_training_batches_do_not_depend_on_the_workers(trees):
    files = list_image_folder(trees["folder"])
    dataset = NaturalImageDataset(files, natural_transforms(True, crop=16))
    loaders = {
        "no workers": training_loader(dataset, batch_size=4, num_workers=0),
        "2 workers": training_loader(dataset, batch_size=4, num_workers=2),
        "2 persistent workers": training_loader(dataset, batch_size=4, num_workers=2, persistent_workers=True),
    }
    results = {}
    for name, loader in loaders.items():
        results[name] = [epoch_batches(loader, global_seed=3, epoch=epoch) for epoch in (1, 2)]
    reference = results["no workers"]
    for name, epochs in results.items():
        for (batches, state), (ref_batches, ref_state) in zip(epochs, reference):
            assert same_batches(batches, ref_batches), name
            assert torch.equal(state, ref_state), name  # the same draws from the global generator
    (epoch1, _), (epoch2, _) = reference
    assert len(epoch1) == 3 and not same_batches(epoch1, epoch2)
    assert sorted(torch.cat([y for _, y in epoch1]).tolist()) == sorted(files.labels.tolist())
    again, _ = epoch_batches(loaders["no workers"], global_seed=4, epoch=1)
    assert not same_batches(again, epoch1)


def test_training_loader_with_pml_sampler_keeps_its_batches(trees):
    files = list_cars196(trees["cars196"])
    dataset = NaturalImageDataset(files, natural_transforms(True, crop=16))
    runs = []
    for workers in (0, 2):
        np.random.seed(0)  # PML's samplers draw from NumPy's global generator
        sampler = MPerClassSampler(dataset.labels, m=2, batch_size=4, length_before_new_iter=12)
        loader = training_loader(dataset, batch_size=4, sampler=sampler, num_workers=workers)
        runs.append(epoch_batches(loader, global_seed=0, epoch=1)[0])
    assert same_batches(*runs)
    for _, labels in runs[0]:
        assert sorted(Counter(labels.tolist()).values()) == [2, 2]


def test_seeded_sampler_pairs_indices_with_per_epoch_seeds():
    inner = [5, 3, 3, 0]
    sampler = SeededSampler(inner)
    assert len(sampler) == 4
    torch.manual_seed(1)
    first = list(sampler)
    assert [index for index, _ in first] == inner
    assert all(isinstance(s, int) and 0 <= s < 2**63 for _, s in first)
    assert len({s for _, s in first}) == 4
    torch.manual_seed(1)
    assert list(sampler) == first
    assert [s for _, s in list(sampler)] != [s for _, s in first]  # the next epoch differs

    shuffling = SeededSampler(None, length=50)
    assert len(shuffling) == 50
    torch.manual_seed(2)
    order = [index for index, _ in shuffling]
    assert sorted(order) == list(range(50)) and order != list(range(50))
    long = SeededSampler(range(3000))
    assert len({s for _, s in long}) == 3000  # seeds drawn in blocks keep coming


@pytest.mark.parametrize(
    "args, message",
    [
        ((None,), "length must be an int >= 0"),
        ((None, -1), "length must be an int >= 0"),
        ((range(3), 3), "length is only for inner=None"),
        ((iter(range(3)),), "inner must be a sampler with a length"),
    ],
)
def test_seeded_sampler_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        SeededSampler(*args)


def test_loader_settings(trees):
    files = list_image_folder(trees["folder"])
    dataset = NaturalImageDataset(files, natural_transforms(False, crop=8, resize=8))
    loader = training_loader(dataset, batch_size=5, num_workers=0, persistent_workers=True)
    assert loader.drop_last and loader.batch_size == 5 and not loader.persistent_workers
    assert isinstance(loader.sampler, SeededSampler) and loader.sampler.inner is None
    assert len(loader) == 2  # 12 items, the incomplete batch dropped
    persistent = training_loader(dataset, batch_size=5, num_workers=2, persistent_workers=True)
    assert persistent.persistent_workers and persistent.num_workers == 2
    evaluation = evaluation_loader(dataset, batch_size=5, num_workers=0)
    assert not evaluation.drop_last and len(evaluation) == 3
    assert isinstance(evaluation.sampler, torch.utils.data.SequentialSampler)
    for make in (training_loader, evaluation_loader):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            make(dataset, batch_size=0)
        with pytest.raises(ValueError, match="num_workers must be an int >= 0"):
            make(dataset, batch_size=2, num_workers=-1)


def test_auto_num_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(20)), raising=False)
    assert [auto_num_workers(w) for w in (1, 2, 4, 8, 32)] == [8, 8, 5, 2, 0]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert auto_num_workers() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert auto_num_workers() == 6 and auto_num_workers(4) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert auto_num_workers() == 1
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="world_size must be a positive int"):
            auto_num_workers(bad)


# ---------------------------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize("name", list(TREE_WRITERS))
def test_load_dataset_natural_lists_the_files(trees, name, tmp_path):
    files = load_dataset(name, str(trees[name]), 64, str(tmp_path / "cache"), pipeline="natural")
    assert isinstance(files, FileSet)
    direct = LISTERS[name](trees[name])
    assert files.paths == direct.paths and files.class_names == direct.class_names
    assert torch.equal(files.labels, direct.labels)
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing cached
    gray = load_dataset(name, str(trees[name]), 8, str(tmp_path / "cache"))
    assert isinstance(gray, ImageSet) and gray.images.shape[1:] == (1, 8, 8)
    unknown = f"dataset '{name}' has no option size_hint; its options: none"
    with pytest.raises(ValueError, match=unknown):
        load_dataset(name, str(trees[name]), 64, str(tmp_path), pipeline="natural", size_hint=3)


@pytest.mark.parametrize("name", ["glyphs", "omniglot", "features"])
def test_load_dataset_refuses_natural_for_other_datasets(name, tmp_path):
    with pytest.raises(ValueError) as info:
        load_dataset(name, str(tmp_path), 32, str(tmp_path), pipeline="natural")
    message = str(info.value)
    assert f"dataset '{name}' has no natural pipeline" in message
    assert "pipeline='grayscale'" in message
    assert all(choice in message for choice in ("cub", "cars196", "sop", "folder"))
    assert not list(tmp_path.iterdir())


def test_load_dataset_refuses_unknown_pipeline(trees):
    assert PIPELINES == ("grayscale", "natural")
    message = "unknown pipeline 'rgb'; valid pipelines: grayscale, natural"
    with pytest.raises(ValueError, match=message):
        load_dataset("cub", str(trees["cub"]), 32, "cache", pipeline="rgb")


# ---------------------------------------------------------------------------------------------
# Memory


MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from pml_regularizers.bench.data import NaturalImageDataset, list_image_folder, natural_transforms
    from pml_regularizers.bench import training_loader

    def peak_kib():  # the high-water mark of this process image's resident memory
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    torch.set_num_threads(1)
    transform = natural_transforms(True, crop=32)
    after_imports = peak_kib()
    listings = [list_image_folder(root) for root in sys.argv[1:]]
    after_listing = peak_kib()
    epochs = []
    for files in listings:
        loader = training_loader(NaturalImageDataset(files, transform), batch_size=50)
        assert sum(len(labels) for _, labels in loader) == len(files.paths)
        del loader
        epochs.append(peak_kib())
    print(json.dumps(
        {"after_imports": after_imports, "after_listing": after_listing, "epochs": epochs}
    ))
    """
)


@pytest.mark.skipif(
    not Path("/proc/self/status").is_file(),
    reason="reads the peak RSS from /proc/self/status (Linux): resource.getrusage's ru_maxrss "
    "of a fresh child includes the parent's peak at fork and exec, so it cannot measure the child",
)
@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Peak RSS (VmHWM) in a fresh process: list a tree of N = 200 and one of 10 N = 2,000 JPEGs
    of 64 x 64 pixels, then iterate one training epoch over each (32 px crops, no workers).

    The epoch over 10 N may raise the peak over the epoch over N by at most 2 KiB per extra image
    (measured: under 0.5 KiB, the sampler's indices and the allocator's slack), a sixth of one
    decoded 64 px image (12 KiB as uint8, 12 KiB as a 32 px float crop): holding the images would
    fail. Listing may cost at most 4 KiB per file, a third of one decoded image (measured: about
    1.3 KiB, the pathlib.Path objects and the listing's transient lists). A ratio of peaks at
    this scale (about 10 MiB of working memory, with 0.5 MiB of noise) cannot reliably tell 10 %
    apart; benchmarks/data_throughput.py compares the peaks at 1,000 and 10,000 images."""
    small = write_bulk_folder(tmp_path / "small", 200)
    large = write_bulk_folder(tmp_path / "large", 2000)
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(small), str(large)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    peaks = json.loads(result.stdout)
    listing_per_file = 1024 * (peaks["after_listing"] - peaks["after_imports"]) / 2200
    epoch_small, epoch_large = (peak - peaks["after_listing"] for peak in peaks["epochs"])
    growth_per_image = 1024 * (epoch_large - epoch_small) / 1800
    print(
        f"listing {listing_per_file:.0f} B/file; epoch peaks {epoch_small} KiB (N) and "
        f"{epoch_large} KiB (10 N) above the listing: {growth_per_image:.0f} B per extra image"
    )
    assert epoch_small > 0  # the measurement sees the epoch
    assert listing_per_file < 4096
    assert growth_per_image < 2048
