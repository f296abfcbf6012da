"""Images stored as arrays in an ``.npz`` file (``load_arrays``, dataset ``arrays``) and Omniglot's
``images_background.npz`` read through ``load_omniglot(use_npz=True)``.

References are independent of the loader: each image resized by PIL on its own (bool images as
PIL's 1-bit images converted to "L", as a 1-bit PNG decodes), and, on the shared Omniglot data,
the official PNG files of the small zips."""

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pml_regularizers.bench.data.arrays as arrays_module
import pml_regularizers.bench.data.omniglot as omniglot_module
from pml_regularizers.bench.data import ImageSet, load_arrays, load_dataset, load_omniglot

SHARED_OMNIGLOT = Path(__file__).resolve().parents[2].parent / "shared" / "omniglot"
SHARED_NPZ = SHARED_OMNIGLOT / "images_background.npz"
SMALL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def reference(image, size):
    """``image`` (H, W), bool or uint8, resized by PIL as an image file would be."""
    pil = Image.fromarray(image)
    if image.dtype == bool:
        assert pil.mode == "1"
        pil = pil.convert("L")
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))


def png_bytes(value, side=6):
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, format="PNG")
    return buffer.getvalue()


def random_images(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype is bool:
        return rng.random(shape) < 0.5
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# load_arrays


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_flat_layout_matches_pil_on_each_image(tmp_path, dtype):
    images = random_images((7, 9, 11), dtype)
    labels = np.array([5, 2, 5, 9, 2, 0, 9])
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    image_set = load_arrays(tmp_path / "a.npz", size=6)
    assert image_set.class_names == ["0", "2", "5", "9"]
    assert image_set.labels.tolist() == [2, 1, 2, 3, 1, 0, 3]
    assert image_set.images.dtype == torch.uint8 and image_set.images.shape == (7, 1, 6, 6)
    expected = np.stack([reference(image, 6) for image in images])[:, None]
    assert np.array_equal(image_set.images.numpy(), expected)


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_class_grid_layout_is_read_row_major(tmp_path, dtype):
    images = random_images((3, 4, 10, 8), dtype, seed=1)
    labels = np.repeat(np.array([12, 3, 7], dtype=np.uint16)[:, None], 4, axis=1)
    np.savez_compressed(tmp_path / "a.npz", images=images, labels=labels)
    image_set = load_arrays(tmp_path / "a.npz", size=5)
    assert image_set.class_names == ["03", "07", "12"]  # zero-padded: sorting the names sorts the values
    assert image_set.labels.tolist() == [2] * 4 + [0] * 4 + [1] * 4
    expected = np.stack([reference(images[c, k], 5) for c in range(3) for k in range(4)])[:, None]
    assert np.array_equal(image_set.images.numpy(), expected)


def test_bool_true_is_white_and_false_black(tmp_path):
    images = np.zeros((2, 4, 4), dtype=bool)
    images[0] = True
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1]))
    image_set = load_arrays(tmp_path / "a.npz", size=3)
    assert (image_set.images[0] == 255).all() and (image_set.images[1] == 0).all()


def test_subset_keeps_file_order_and_relabels(tmp_path):
    images = random_images((6, 4, 4), np.uint8, seed=2)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([4, 1, 4, 8, 1, 8]))
    image_set = load_arrays(tmp_path / "a.npz", size=4)
    subset = image_set.subset([2, 0])  # classes "8" and "1"
    assert subset.class_names == ["8", "1"]
    assert subset.labels.tolist() == [1, 0, 1, 0]
    assert np.array_equal(subset.images[:, 0].numpy(), images[[1, 3, 4, 5]])  # same size: unchanged pixels


def bad_file_cases():
    ok_images, ok_labels = np.zeros((3, 4, 4), np.uint8), np.arange(3)
    return [
        ({"labels": ok_labels}, r"lacks the array\(s\) \['images'\]"),
        ({"images": ok_images}, r"lacks the array\(s\) \['labels'\]"),
        (
            {"images": ok_images.astype(np.float32), "labels": ok_labels},
            "'images' must be bool or uint8, got dtype float32",
        ),
        (
            {"images": ok_images.astype(np.int16), "labels": ok_labels},
            "'images' must be bool or uint8, got dtype int16",
        ),
        ({"images": ok_images, "labels": ok_labels.astype(float)}, "'labels' must hold integers, got dtype float64"),
        ({"images": ok_images, "labels": np.array(["a", "b", "c"])}, "'labels' must hold integers"),
        ({"images": ok_images, "labels": np.array([True, False, True])}, "'labels' must hold integers, got dtype bool"),
        ({"images": np.zeros((3, 4), np.uint8), "labels": ok_labels}, r"'images' must have shape \(N, H, W\)"),
        ({"images": np.zeros((1, 3, 1, 4, 4), np.uint8), "labels": ok_labels}, r"'images' must have shape"),
        ({"images": ok_images, "labels": np.arange(2)}, r"'labels' must have the shape .* \(3,\), got \(2,\)"),
        ({"images": np.zeros((2, 3, 4, 4), bool), "labels": np.arange(6)}, r"\(2, 3\), got \(6,\)"),
        ({"images": ok_images, "labels": np.zeros((3, 1), int)}, r"'labels' must have the shape"),
        ({"images": ok_images, "labels": np.array([0, -2, 1])}, "'labels' must be >= 0, got -2"),
        ({"images": np.zeros((0, 4, 4), np.uint8), "labels": np.zeros(0, int)}, "'images' is empty"),
        ({"images": np.zeros((3, 0, 4), np.uint8), "labels": ok_labels}, "'images' is empty"),
        ({"images": np.zeros((0, 2, 4, 4), bool), "labels": np.zeros((0, 2), int)}, "'images' is empty"),
        ({"images": np.empty((3, 4, 4), object), "labels": ok_labels}, r"hold Python objects \('images' does\)"),
        ({"images": ok_images, "labels": np.array([0, 1, 2], object)}, r"hold Python objects \('labels' does\)"),
    ]


@pytest.mark.parametrize(("arrays", "message"), bad_file_cases())
def test_bad_arrays_are_refused_naming_the_array(tmp_path, arrays, message):
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_arrays(tmp_path / "a.npz", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "a.npz") in str(info.value)
    assert "allow_pickle" not in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_files_that_are_not_npz_archives(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not an archive")
    np.save(tmp_path / "single.npy", np.zeros((2, 4, 4), np.uint8))
    with open(tmp_path / "pickled.npz", "wb") as file:
        pickle.dump({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.arange(2)}, file)
    cases = [
        ("garbage.npz", "is not an .npz or .npy file"),
        ("single.npy", "is a single .npy array"),
        ("pickled.npz", r"is not an .npz or .npy file \(pickled files are never loaded\)"),
    ]
    for name, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            load_arrays(tmp_path / name)
        assert "allow_pickle" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=f"arrays file {tmp_path / 'none.npz'} does not exist"):
        load_arrays(tmp_path / "none.npz")
    with pytest.raises(IsADirectoryError, match=f"arrays file {tmp_path} is a folder, not a file"):
        load_arrays(tmp_path)
    with pytest.raises(ValueError, match="size must be a positive number of pixels"):
        load_arrays(tmp_path / "garbage.npz", size=0)


def test_cache_is_reused_and_follows_the_file(tmp_path, monkeypatch):
    path, cache = tmp_path / "a.npz", tmp_path / "cache"
    first_images = random_images((3, 6, 6), np.uint8, seed=3)
    np.savez(path, images=first_images, labels=np.arange(3))
    first = load_arrays(path, size=4, cache_dir=cache)
    assert [p.name.startswith("arrays-4px-") for p in cache.iterdir()] == [True]

    def fail(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(arrays_module, "read_npz", fail)
    again = load_arrays(path, size=4, cache_dir=cache)
    assert torch.equal(again.images, first.images) and again.class_names == first.class_names
    monkeypatch.undo()

    second_images = 255 - first_images
    stat = path.stat()
    np.savez(path, images=second_images, labels=np.arange(3))  # the same size in bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == stat.st_size
    changed = load_arrays(path, size=4, cache_dir=cache)
    expected = np.stack([reference(image, 4) for image in second_images])[:, None]
    assert np.array_equal(changed.images.numpy(), expected)
    assert len(list(cache.iterdir())) == 2
    assert load_arrays(path, size=3, cache_dir=cache).images.shape == (3, 1, 3, 3)
    assert len(list(cache.iterdir())) == 3


def test_registry_loads_arrays_with_its_cache(tmp_path):
    images = random_images((4, 5, 5), bool, seed=4)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([1, 0, 1, 0]))
    via_name = load_dataset("arrays", str(tmp_path / "a.npz"), 3, str(tmp_path / "cache"))
    direct = load_arrays(tmp_path / "a.npz", size=3)
    assert isinstance(via_name, ImageSet)
    assert torch.equal(via_name.images, direct.images) and via_name.class_names == direct.class_names
    assert list((tmp_path / "cache").glob("arrays-3px-*.pt"))
    with pytest.raises(ValueError, match="dataset 'arrays' needs root"):
        load_dataset("arrays", None, 3, str(tmp_path))
    with pytest.raises(ValueError, match="dataset 'arrays' has no option per_class; its options: none"):
        load_dataset("arrays", str(tmp_path / "a.npz"), 3, str(tmp_path), per_class=2)


# ---------------------------------------------------------------------------------------------
# Omniglot's images_background.npz, on fake roots


def fake_omniglot_root(root):
    """images_background.npz (2 characters x 3 drawers), a small zip and an evaluation folder."""
    root.mkdir(parents=True, exist_ok=True)
    images = random_images((2, 3, 6, 6), bool, seed=5)
    labels = np.repeat(np.arange(2)[:, None], 3, axis=1)
    np.savez_compressed(root / "images_background.npz", images=images, labels=labels)
    with zipfile.ZipFile(root / "images_background_small1.zip", "w") as archive:
        archive.writestr("images_background_small1/Greek/character01/0001_01.png", png_bytes(17))
    evaluation = root / "images_evaluation" / "Zeta" / "character01"
    evaluation.mkdir(parents=True)
    for drawer, value in ((1, 40), (2, 80)):
        (evaluation / f"0965_0{drawer}.png").write_bytes(png_bytes(value))
    return images


def test_omniglot_npz_replaces_the_background_subsets(tmp_path):
    images = fake_omniglot_root(tmp_path / "root")
    image_set = load_omniglot(tmp_path / "root", size=6, cache_dir=tmp_path / "cache", use_npz=True)
    assert image_set.class_names == ["Zeta/character01", "background/0001", "background/0002"]
    assert image_set.labels.tolist() == [1, 1, 1, 2, 2, 2, 0, 0]
    expected_npz = np.where(images.reshape(6, 6, 6), 255, 0)
    assert np.array_equal(image_set.images[:6, 0].numpy(), expected_npz)  # 6 px: resizing keeps pixels
    assert image_set.images[6:, 0, 0, 0].tolist() == [40, 80]
    assert not (tmp_path / "cache" / "images_background_small1").exists()  # the small zip is ignored
    assert not (tmp_path / "root" / "images_background_small1").exists()

    via_name = load_dataset("omniglot", str(tmp_path / "root"), 6, str(tmp_path / "cache"), use_npz=True)
    assert torch.equal(via_name.images, image_set.images) and via_name.class_names == image_set.class_names


def test_omniglot_without_use_npz_ignores_the_npz(tmp_path):
    fake_omniglot_root(tmp_path / "root")
    image_set = load_omniglot(tmp_path / "root", size=6, cache_dir=tmp_path / "cache")
    assert image_set.class_names == ["Greek/character01", "Zeta/character01"]
    assert image_set.images[:, 0, 0, 0].tolist() == [17, 40, 80]
    only_npz = tmp_path / "only_npz"
    only_npz.mkdir()
    (tmp_path / "root" / "images_background.npz").rename(only_npz / "images_background.npz")
    with pytest.raises(FileNotFoundError, match="it holds images_background.npz: pass use_npz=True"):
        load_omniglot(only_npz)
    assert load_omniglot(only_npz, size=6, use_npz=True).class_names == ["background/0001", "background/0002"]


def test_omniglot_npz_errors_name_the_array(tmp_path):
    np.savez(
        tmp_path / "images_background.npz", images=np.zeros((2, 3, 4, 4), np.float32), labels=np.zeros((2, 3), int)
    )
    with pytest.raises(ValueError, match="'images' must be bool or uint8"):
        load_omniglot(tmp_path, use_npz=True)


def test_omniglot_download_with_npz_fetches_only_the_evaluation_zip(tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, destination, md5):
        fetched.append(url)
        with zipfile.ZipFile(destination, "w") as archive:
            archive.writestr("images_evaluation/Zeta/character02/0970_01.png", png_bytes(9))
        return destination

    monkeypatch.setattr(omniglot_module, "download_file", fake_download)
    root = tmp_path / "root"
    root.mkdir()
    np.savez(root / "images_background.npz", images=np.ones((1, 2, 6, 6), bool), labels=np.zeros((1, 2), int))
    image_set = load_omniglot(root, size=6, download=True, cache_dir=tmp_path / "cache", use_npz=True)
    assert fetched == [omniglot_module.OMNIGLOT_URL.format(name="images_evaluation")]
    assert image_set.class_names == ["Zeta/character02", "background/0001"]


# ---------------------------------------------------------------------------------------------
# The shared Omniglot background set, against the official PNGs of the small zips


@pytest.fixture(scope="module")
def shared_npz_cache(tmp_path_factory):
    if not SHARED_NPZ.is_file():
        pytest.skip(f"the shared Omniglot file {SHARED_NPZ} is absent")
    cache = tmp_path_factory.mktemp("arrays_cache")
    load_arrays(SHARED_NPZ, size=32, cache_dir=cache)  # decoded once for the tests below
    return cache


def test_shared_npz_holds_the_whole_background_set(shared_npz_cache):
    image_set = load_arrays(SHARED_NPZ, size=32, cache_dir=shared_npz_cache)
    assert image_set.images.shape == (19280, 1, 32, 32)
    assert image_set.num_classes == 964
    assert image_set.labels.tolist() == [c for c in range(964) for _ in range(20)]


def official_characters(root, wanted):
    """Copy the PNGs of the ``wanted`` (alphabet, character) pairs out of the small zips into
    ``root/images_background``, the official folder layout."""
    copied = set()
    for name in SMALL_ZIPS:
        with zipfile.ZipFile(SHARED_OMNIGLOT / name) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if len(parts) == 4 and (parts[1], parts[2]) in wanted and parts[3].endswith(".png"):
                    target = root / "images_background" / parts[1] / parts[2] / parts[3]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
                    copied.add((parts[1], parts[2]))
    assert copied == wanted


def test_shared_npz_pixels_equal_the_official_pngs(shared_npz_cache, tmp_path):
    if not all((SHARED_OMNIGLOT / name).is_file() for name in SMALL_ZIPS):
        pytest.skip(f"the shared Omniglot zips {SMALL_ZIPS} are absent from {SHARED_OMNIGLOT}")
    wanted = {("Balinese", "character01"), ("Greek", "character01"), ("Tagalog", "character17")}
    official_characters(tmp_path / "official", wanted)
    from_png = load_omniglot(tmp_path / "official", size=32, cache_dir=tmp_path / "png_cache")
    files = sorted((tmp_path / "official" / "images_background").glob("*/*/*.png"))
    assert len(files) == 60
    from_npz = load_omniglot(SHARED_OMNIGLOT, size=32, cache_dir=shared_npz_cache, use_npz=True)
    assert from_npz.num_classes == 964 and from_npz.images.shape[0] == 19280
    assert from_npz.class_names == [f"background/{i:04d}" for i in range(1, 965)]
    assert not [p for p in shared_npz_cache.iterdir() if p.is_dir()]  # the small zips are not read
    for alphabet, character in sorted(wanted):
        ids = {path.stem.split("_")[0] for path in files if path.parent.parts[-2:] == (alphabet, character)}
        (character_id,) = ids
        png_images = from_png.images[from_png.labels == from_png.class_names.index(f"{alphabet}/{character}")]
        npz_images = from_npz.images[from_npz.labels == from_npz.class_names.index(f"background/{character_id}")]
        assert png_images.shape == npz_images.shape == (20, 1, 32, 32)
        assert torch.equal(png_images, npz_images)  # drawer by drawer: XXXX_01.png .. XXXX_20.png
