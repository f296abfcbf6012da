"""The benchmark data sets: containers and torch datasets, splits, download and zip safety, the
generated glyph set, Omniglot (real data when available), CUB/Cars196/SOP fake layouts, image
folders, feature files and the by-name registry.

References are computed independently of the loaders: counts by walking folders or zip listings,
pixel values from the luma formula on solid-colour images, glyph shapes straight from FreeType."""

import hashlib
import io
import os
import time
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.ft2font import FT2Font
from PIL import Image
from pytorch_metric_learning.samplers import MPerClassSampler

import pml_regularizers.bench.data.decode as decode_module
import pml_regularizers.bench.data.download as download_module
import pml_regularizers.bench.data.glyphs as glyphs_module
import pml_regularizers.bench.data.omniglot as omniglot_module
from pml_regularizers.bench.data import (
    DataWarning,
    FeatureDataset,
    FeatureSet,
    ImageSet,
    TensorImageDataset,
    class_disjoint_split,
    class_kfold,
    dataset_names,
    download_file,
    load_cars196,
    load_cub,
    load_dataset,
    load_features,
    load_glyphs,
    load_image_folder,
    load_omniglot,
    load_sop,
    safe_extract_zip,
    training_folds,
)
from pml_regularizers.bench.data.paths import require_path

SHARED_OMNIGLOT = Path(__file__).resolve().parents[2].parent / "shared" / "omniglot"
SMALL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
DEJAVU_SANS = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def luma(rgb):
    """PIL's documented RGB -> L conversion (ITU-R 601-2), rounded."""
    r, g, b = rgb
    return round((r * 299 + g * 587 + b * 114) / 1000)


def solid_image(path, colour, mode="RGB", side=7):
    """Write a solid image; PNG keeps the value exact. Returns the expected grayscale value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (side, side + 2), colour).save(path)
    return colour if mode == "L" else luma(colour)


def md5_of(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def make_zip(path, members):
    """Write a zip with ``members`` mapping member name to bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def png_bytes(value, side=9):
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# ImageSet / FeatureSet and the torch datasets


def small_image_set():
    images = torch.arange(6 * 16, dtype=torch.int64).reshape(6, 1, 4, 4).mul(2).to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return ImageSet(images, labels, ["a", "b", "c"])


def test_image_set_subset_relabels_in_given_order():
    image_set = small_image_set()
    sub = image_set.subset([2, 0])
    assert sub.class_names == ["c", "a"]
    assert sub.num_classes == 2
    assert sub.labels.tolist() == [1, 0, 1, 0]
    assert torch.equal(sub.images, image_set.images[[0, 2, 3, 5]])


@pytest.mark.parametrize("bad", [[0, 0], [3], [-1]])
def test_subset_rejects_bad_class_ids(bad):
    with pytest.raises(ValueError, match="class_ids"):
        small_image_set().subset(bad)


def test_image_set_validates_types_and_label_range():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="int64"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1.0]), ["a", "b"])
    with pytest.raises(ValueError, match="0..1"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"])


def test_feature_set_subset_and_dataset():
    features = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    feature_set = FeatureSet(features, torch.tensor([1, 0, 1, 2, 0]), ["x", "y", "z"])
    sub = feature_set.subset([1])
    assert sub.class_names == ["y"] and sub.labels.tolist() == [0, 0]
    assert torch.equal(sub.features, features[[0, 2]])
    dataset = FeatureDataset(feature_set)
    assert len(dataset) == 5
    vector, label = dataset[3]
    assert torch.equal(vector, features[3]) and label == 2
    assert torch.equal(dataset.labels, feature_set.labels)
    with pytest.raises(ValueError, match="float32"):
        FeatureSet(features.double(), torch.tensor([0, 0, 0, 0, 0]), ["x"])


def test_tensor_image_dataset_normalises_without_augmentation():
    image_set = small_image_set()
    dataset = TensorImageDataset(image_set, mean=0.25, std=0.5)
    assert len(dataset) == 6
    image, label = dataset[4]
    expected = (image_set.images[4].double() / 255 - 0.25) / 0.5
    assert image.dtype == torch.float32 and image.shape == (1, 4, 4)
    torch.testing.assert_close(image.double(), expected, rtol=0, atol=1e-6)
    assert label == 1 and isinstance(label, int)


def shifted_candidates(pixels, shift, fill):
    """Every translation of ``pixels`` (H, W) by up to ``shift``, border filled with ``fill``."""
    height, width = pixels.shape
    padded = np.pad(pixels, shift, constant_values=fill)
    return [
        padded[top : top + height, left : left + width] for top in range(2 * shift + 1) for left in range(2 * shift + 1)
    ]


def test_tensor_image_dataset_translation_is_a_shift_with_fill():
    torch.manual_seed(0)
    image_set = ImageSet(torch.randint(0, 256, (3, 1, 6, 5), dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"])
    for fill in (0.0, 1.0):
        dataset = TensorImageDataset(image_set, augment=True, max_shift=2, mean=0.0, std=1.0, fill=fill)
        pixels = image_set.images[1, 0].double().numpy() / 255
        candidates = shifted_candidates(pixels, 2, fill)
        seen = set()
        for _ in range(60):
            image = dataset[1][0][0].double().numpy()
            matches = [i for i, c in enumerate(candidates) if np.allclose(image, c, atol=1e-6)]
            assert matches, "augmented image is not a translation of the original"
            seen.update(matches)
        assert len(seen) > 5


def test_tensor_image_dataset_augmentation_follows_torch_seed_and_flip_flag():
    image_set = small_image_set()
    dataset = TensorImageDataset(image_set, augment=True, max_shift=1)
    torch.manual_seed(3)
    first = [dataset[i][0] for i in range(6)]
    torch.manual_seed(3)
    second = [dataset[i][0] for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))

    flipping = TensorImageDataset(image_set, augment=True, max_shift=0, hflip=True)
    plain = TensorImageDataset(image_set)[2][0]
    outcomes = {torch.equal(flipping[2][0], plain.flip(-1)) for _ in range(40)}
    assert outcomes == {True, False}
    no_flip = TensorImageDataset(image_set, augment=True, max_shift=0)
    assert all(torch.equal(no_flip[2][0], plain) for _ in range(10))


def test_tensor_image_dataset_works_with_pml_sampler():
    image_set = small_image_set()
    dataset = TensorImageDataset(image_set, augment=True)
    sampler = MPerClassSampler(dataset.labels, m=2, length_before_new_iter=6)
    loader = torch.utils.data.DataLoader(dataset, batch_size=6, sampler=sampler)
    images, labels = next(iter(loader))
    assert images.shape == (6, 1, 4, 4)
    assert sorted(Counter(labels.tolist()).values()) == [2, 2, 2]


def test_tensor_image_dataset_rejects_bad_parameters():
    with pytest.raises(ValueError, match="max_shift"):
        TensorImageDataset(small_image_set(), max_shift=-1)
    with pytest.raises(ValueError, match="std"):
        TensorImageDataset(small_image_set(), std=0.0)


# ---------------------------------------------------------------------------------------------
# Splits


def test_class_disjoint_split_halves_sorted_classes():
    labels = torch.tensor([6, 0, 3, 3, 1, 5, 2, 4, 0])
    train, test = class_disjoint_split(labels)
    assert train == [0, 1, 2] and test == [3, 4, 5, 6]
    assert class_disjoint_split(torch.tensor([9, 4])) == ([4], [9])
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_disjoint_split(torch.tensor([1, 1, 1]))


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 500), min_size=2, max_size=60), st.data())
def test_class_kfold_partitions_classes_into_contiguous_folds(class_set, data):
    classes = sorted(class_set)
    k = data.draw(st.integers(2, len(classes)))
    shuffled = data.draw(st.permutations(classes))
    folds = class_kfold(shuffled, k)
    assert len(folds) == k
    vals = [val for _, val in folds]
    assert sorted(c for val in vals for c in val) == classes
    assert [c for val in vals for c in val] == classes  # contiguous chunks, in order
    sizes = [len(val) for val in vals]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for train, val in folds:
        assert sorted(train) == train
        assert not set(train) & set(val)
        assert sorted(train + val) == classes


def test_class_kfold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be between 2"):
        class_kfold([0, 1, 2], 1)
    with pytest.raises(ValueError, match="k must be between 2"):
        class_kfold([0, 1, 2], 4)
    with pytest.raises(ValueError, match="distinct"):
        class_kfold([0, 1, 1, 2], 2)
    assert class_kfold(range(8), 4)[1] == ([0, 1, 4, 5, 6, 7], [2, 3])


def test_training_folds_are_the_runners_folds():
    assert training_folds([5, 2, 9], 0) == [([2, 5, 9], [])]  # no CV: one fold, all classes, no validation
    assert training_folds(range(8), 4) == class_kfold(range(8), 4)
    with pytest.raises(ValueError, match="k must be between 2"):
        training_folds([0, 1, 2], 1)


# ---------------------------------------------------------------------------------------------
# Download and zip extraction


def test_download_file_over_file_url(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"omniglot" * 1000)
    dest = tmp_path / "sub" / "copy.bin"
    result = download_file(source.as_uri(), dest, md5_of(source))
    assert result == dest and dest.read_bytes() == source.read_bytes()
    source.unlink()  # an existing file with the right digest is kept, not fetched again
    assert download_file(source.as_uri(), dest, md5_of(dest)) == dest


def test_download_file_md5_mismatch_deletes_and_names_digests(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    dest = tmp_path / "out" / "file.zip"
    wrong = "0" * 32
    with pytest.raises(ValueError) as info:
        download_file(source.as_uri(), dest, wrong)
    assert wrong in str(info.value) and md5_of(source) in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("evil", ["../evil.txt", "good/../../evil.txt", "/abs_evil.txt"])
def test_safe_extract_zip_rejects_path_traversal(tmp_path, evil):
    archive = make_zip(tmp_path / "bad.zip", {"good/a.txt": b"a", evil: b"x"})
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="outside the target folder"):
        safe_extract_zip(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs_evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_safe_extract_zip_rejects_symlinks(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as archive:
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symlink"):
        safe_extract_zip(tmp_path / "link.zip", tmp_path / "dest")


def test_safe_extract_zip_extracts_and_lists_top_level(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"top/x/a.txt": b"a", "top/b.txt": b"b", "c.txt": b"c"})
    tops = safe_extract_zip(archive, tmp_path / "dest")
    assert tops == [tmp_path / "dest" / "c.txt", tmp_path / "dest" / "top"]
    assert (tmp_path / "dest" / "top" / "x" / "a.txt").read_bytes() == b"a"
    (tmp_path / "not.zip").write_bytes(b"plain")
    with pytest.raises(ValueError, match="not a valid zip"):
        safe_extract_zip(tmp_path / "not.zip", tmp_path / "dest2")


# ---------------------------------------------------------------------------------------------
# Glyphs


@pytest.fixture(scope="module")
def glyph_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("glyphs")


@pytest.fixture(scope="module")
def glyphs30(glyph_dir):
    return load_glyphs(glyph_dir, num_classes=30, per_class=5, size=32, seed=0)


@pytest.fixture(scope="session")
def default_glyphs(tmp_path_factory):
    start = time.perf_counter()
    image_set = load_glyphs(tmp_path_factory.mktemp("glyphs_default"))
    print(f"default glyph generation: {time.perf_counter() - start:.1f} s")
    return image_set


def test_glyphs_shape_labels_and_names(glyphs30):
    assert glyphs30.images.shape == (150, 1, 32, 32) and glyphs30.images.dtype == torch.uint8
    assert glyphs30.labels.tolist() == [c for c in range(30) for _ in range(5)]
    names = glyphs30.class_names
    assert names == sorted(names) and len(set(names)) == 30
    charmap = FT2Font(str(DEJAVU_SANS)).get_charmap()
    for name in names:
        assert name.startswith("U+") and name == f"U+{int(name[2:], 16):04X}"
        code = int(name[2:], 16)
        assert code in charmap
        assert unicodedata.category(chr(code))[0] not in "ZMC"


def test_glyphs_look_like_omniglot(glyphs30):
    images = glyphs30.images[:, 0].float()
    border = torch.cat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], dim=1)
    assert border.mean() > 245  # white background
    assert (images.amin(dim=(1, 2)) < 100).all()  # every image has dark ink
    ink = (images < 128).float().mean(dim=(1, 2))
    assert (ink > 0.01).all() and (ink < 0.5).all()
    for c in range(30):  # instances of a class vary
        group = glyphs30.images[glyphs30.labels == c]
        assert len({g.numpy().tobytes() for g in group}) == 5


def rendered_bitmap(face, code, pixel_size):
    face.set_size(pixel_size, 72)
    face.set_text(chr(code), 0.0)
    face.draw_glyphs_to_bitmap(antialiased=True)
    bitmap = np.asarray(face.get_image())
    rows = np.flatnonzero(bitmap.max(axis=1))
    cols = np.flatnonzero(bitmap.max(axis=0))
    return bitmap[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def test_glyph_classes_are_visually_distinct(glyphs30):
    face = FT2Font(str(DEJAVU_SANS))
    codes = [int(name[2:], 16) for name in glyphs30.class_names]
    bitmaps = [rendered_bitmap(face, code, 24) for code in codes]
    keys = {(b.shape, b.tobytes()) for b in bitmaps}
    assert len(keys) == len(codes)
    assert all((b > 0).sum() >= 10 for b in bitmaps)  # no empty or near-empty glyphs
    means = glyphs30.images.float().reshape(30, 5, -1).mean(dim=1)
    distances = torch.cdist(means, means)
    assert distances[~torch.eye(30, dtype=torch.bool)].min() > 0


@pytest.mark.slow
def test_glyphs_are_deterministic_and_seeded(glyphs30, tmp_path):
    again = load_glyphs(tmp_path / "a", num_classes=30, per_class=5, size=32, seed=0)
    assert torch.equal(again.images, glyphs30.images) and again.class_names == glyphs30.class_names
    other = load_glyphs(tmp_path / "b", num_classes=30, per_class=5, size=32, seed=1)
    assert other.class_names == glyphs30.class_names
    assert not torch.equal(other.images, glyphs30.images)


def test_glyphs_are_cached(glyphs30, glyph_dir, monkeypatch):
    files = list(Path(glyph_dir).glob("*.pt"))
    assert [f.name for f in files] == ["glyphs-v1-c30-n5-s32-seed0.pt"]
    payload = torch.load(files[0], weights_only=True)
    assert torch.equal(payload["images"], glyphs30.images)

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(glyphs_module, "generate_glyphs", fail)
    cached = load_glyphs(glyph_dir, num_classes=30, per_class=5, size=32, seed=0)
    assert torch.equal(cached.images, glyphs30.images)
    assert torch.equal(cached.labels, glyphs30.labels)


def test_glyph_warp_scales_in_the_stated_direction():
    """Scale 1.2 must enlarge the ink ~(1.2 / 0.8) ** 2 times more than scale 0.8 (an inverted
    affine map would shrink it instead); same seed, so same faces and stroke changes."""
    fixed = {"max_rotation": 0.0, "max_shear": 0.0, "max_translation": 0.0}
    ink = []
    for scale in (0.8, 1.2):
        augmentation = glyphs_module.Augmentation(scale_range=(scale, scale), **fixed)
        image_set = glyphs_module.generate_glyphs(10, 4, 32, seed=2, augmentation=augmentation)
        ink.append(float((255 - image_set.images.double()).sum()))
    assert 1.9 < ink[1] / ink[0] < 2.6


def test_glyphs_other_size(tmp_path):
    image_set = load_glyphs(tmp_path, num_classes=12, per_class=3, size=16, seed=5)
    assert image_set.images.shape == (36, 1, 16, 16)
    assert image_set.num_classes == 12


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"per_class": 0}, "per_class"),
        ({"size": 4}, "size"),
        pytest.param({"size": 8, "num_classes": 5000}, "exceeds", marks=pytest.mark.slow),
        ({"num_classes": 12.5}, r"num_classes must be an int >= 2, got 12.5"),
        ({"per_class": 2.5}, r"per_class must be an int >= 1, got 2.5"),
        ({"size": None}, r"size must be a positive number of pixels, got None"),
        ({"size": float("inf")}, r"size must be a positive number of pixels, got inf"),
    ],
)
def test_glyphs_reject_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_glyphs(tmp_path, **kwargs)


@pytest.mark.slow
def test_default_glyphs_have_enough_classes(default_glyphs):
    assert default_glyphs.num_classes >= 500
    assert default_glyphs.images.shape == (default_glyphs.num_classes * 20, 1, 32, 32)
    assert set(Counter(default_glyphs.labels.tolist()).values()) == {20}
    prototypes = default_glyphs.images.float().reshape(default_glyphs.num_classes, 20, -1).mean(1)
    assert len({p.numpy().tobytes() for p in prototypes}) == default_glyphs.num_classes


# ---------------------------------------------------------------------------------------------
# Omniglot: real data from ../shared when present, fake layouts otherwise


def zip_reference(zip_paths):
    """{(class name, file name): png bytes} over the zips, first zip wins, via zip listings only."""
    reference = {}
    for zip_path in zip_paths:
        with zipfile.ZipFile(zip_path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if len(parts) == 4 and parts[3].endswith(".png"):
                    key = (f"{parts[1]}/{parts[2]}", parts[3])
                    reference.setdefault(key, archive.read(name))
    return reference


def decode_bytes(data, size):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def real_omniglot(tmp_path_factory):
    if not all((SHARED_OMNIGLOT / name).is_file() for name in SMALL_ZIPS):
        pytest.skip(f"real Omniglot zips not found in {SHARED_OMNIGLOT}")
    cache = tmp_path_factory.mktemp("omniglot_cache")
    before = sorted(os.listdir(SHARED_OMNIGLOT))
    start = time.perf_counter()
    image_set = load_omniglot(SHARED_OMNIGLOT, size=32, cache_dir=cache)
    print(f"Omniglot load from the shared zips: {time.perf_counter() - start:.1f} s")
    assert sorted(os.listdir(SHARED_OMNIGLOT)) == before  # nothing written beside the data
    return image_set, cache


@pytest.mark.slow
def test_real_omniglot_counts_match_zip_listings(real_omniglot):
    image_set, _ = real_omniglot
    reference = zip_reference([SHARED_OMNIGLOT / name for name in SMALL_ZIPS])
    per_class = Counter(class_name for class_name, _ in reference)
    assert len(reference) == 4840 and len(per_class) == 242  # as documented beside the data
    assert image_set.images.shape == (4840, 1, 32, 32)
    assert image_set.class_names == sorted(per_class)
    counts = Counter(image_set.class_names[label] for label in image_set.labels.tolist())
    assert counts == per_class
    assert set(counts.values()) == {20}


@pytest.mark.parametrize("class_name", ["Greek/character01", "Balinese/character01", "Tagalog/character17"])
@pytest.mark.slow
def test_real_omniglot_pixels_match_independent_decoding(real_omniglot, class_name):
    image_set, _ = real_omniglot
    reference = zip_reference([SHARED_OMNIGLOT / name for name in SMALL_ZIPS])
    expected = sorted(decode_bytes(data, 32).tobytes() for (name, _), data in reference.items() if name == class_name)
    label = image_set.class_names.index(class_name)
    got = sorted(image.numpy().tobytes() for image in image_set.images[image_set.labels == label])
    assert got == expected
    assert image_set.images[image_set.labels == label].float().mean() > 200  # white background


@pytest.mark.slow
def test_real_omniglot_reuses_extraction_and_reads_folders(real_omniglot, monkeypatch):
    image_set, cache = real_omniglot
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [
        "images_background_small1",
        "images_background_small2",
    ]

    def fail(*args, **kwargs):
        raise AssertionError("extracted or decoded again")

    monkeypatch.setattr(download_module, "safe_extract_zip", fail)
    monkeypatch.setattr(decode_module, "decode_images", fail)
    again = load_omniglot(SHARED_OMNIGLOT, size=32, cache_dir=cache)
    assert torch.equal(again.images, image_set.images)
    assert again.class_names == image_set.class_names
    monkeypatch.undo()
    from_folders = load_omniglot(cache, size=32)
    assert from_folders.class_names == image_set.class_names
    assert torch.equal(from_folders.labels.bincount(), image_set.labels.bincount())


def fake_omniglot_zips(folder):
    """Two 'small' zips sharing Greek (same files) plus one unique alphabet each."""
    folder.mkdir(parents=True, exist_ok=True)
    shared = {f"Greek/character0{c}/0{c}_0{d}.png": png_bytes(40 * c + d) for c in (1, 2) for d in (1, 2)}
    subsets = {
        "images_background_small1": {
            "Aleph/character01/10_01.png": png_bytes(1),
            "Aleph/character01/10_02.png": png_bytes(2),
        },
        "images_background_small2": {"Tagalog/character03/30_01.png": png_bytes(3)},
    }
    for name, own in subsets.items():
        members = {f"{name}/{k}": v for k, v in {**shared, **own}.items()}
        make_zip(folder / f"{name}.zip", members)


def test_fake_omniglot_zips_deduplicated_and_extracted_into_root(tmp_path):
    fake_omniglot_zips(tmp_path)
    image_set = load_omniglot(tmp_path, size=8)
    assert image_set.class_names == [
        "Aleph/character01",
        "Greek/character01",
        "Greek/character02",
        "Tagalog/character03",
    ]
    assert image_set.labels.bincount().tolist() == [2, 2, 2, 1]
    assert (tmp_path / "images_background_small1" / "Greek").is_dir()  # extracted beside the zips
    assert not list(tmp_path.glob(".extract-*"))


def test_fake_omniglot_folders_and_zip_mixed(tmp_path):
    solid_image(tmp_path / "images_evaluation" / "Zeta" / "character01" / "1_01.png", 0, mode="L")
    solid_image(tmp_path / "images_evaluation" / "Zeta" / "character01" / "1_02.png", 255, mode="L")
    make_zip(
        tmp_path / "images_background.zip",
        {"images_background/Alpha/character01/2_01.png": png_bytes(7)},
    )
    image_set = load_omniglot(tmp_path, size=4, cache_dir=tmp_path / "cache")
    assert image_set.class_names == ["Alpha/character01", "Zeta/character01"]
    assert image_set.labels.tolist() == [0, 1, 1]
    assert sorted(v for v in image_set.images[:, 0, 0, 0].tolist()) == [0, 7, 255]
    assert (tmp_path / "cache" / "images_background").is_dir()
    assert not (tmp_path / "images_background").exists()


def test_omniglot_rejects_traversal_zip(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    make_zip(
        root / "images_background.zip",
        {"images_background/A/character01/1.png": png_bytes(1), "../evil.txt": b"x"},
    )
    with pytest.raises(ValueError, match="outside the target folder"):
        load_omniglot(root)
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip"]


def test_omniglot_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_omniglot(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no Omniglot images found"):
        load_omniglot(tmp_path)


def test_omniglot_download_uses_url_and_checks_md5(tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    members = {
        "images_background": "A/character01/1.png",
        "images_evaluation": "B/character02/2.png",
    }
    digests = {}
    for value, (name, member) in enumerate(members.items()):
        make_zip(server / f"{name}.zip", {f"{name}/{member}": png_bytes(value)})
        digests[name] = md5_of(server / f"{name}.zip")
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_URL", server.as_uri() + "/{name}.zip")
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_MD5", digests)
    root = tmp_path / "data"
    image_set = load_omniglot(root, size=4, download=True, cache_dir=tmp_path / "cache")
    assert image_set.class_names == ["A/character01", "B/character02"]
    assert (root / "images_background.zip").is_file()

    monkeypatch.setattr(omniglot_module, "OMNIGLOT_MD5", {**digests, "images_evaluation": "f" * 32})
    other = tmp_path / "other"
    with pytest.raises(ValueError, match="MD5 mismatch"):
        load_omniglot(other, download=True)
    assert not (other / "images_evaluation.zip").exists()


def test_omniglot_known_md5_of_small_zips():
    if not all((SHARED_OMNIGLOT / name).is_file() for name in SMALL_ZIPS):
        pytest.skip(f"real Omniglot zips not found in {SHARED_OMNIGLOT}")
    for name in SMALL_ZIPS:
        assert omniglot_module.OMNIGLOT_MD5[name[: -len(".zip")]] == md5_of(SHARED_OMNIGLOT / name)


# ---------------------------------------------------------------------------------------------
# CUB-200-2011, Cars196, SOP through PML, on fake folders


CUB_IMAGES = {  # relative path -> (mode, colour), class id from the folder number
    "001.Black_footed_Albatross/a_0001.png": ("RGB", (200, 10, 30)),
    "001.Black_footed_Albatross/a_0002.png": ("L", 17),
    "002.Laysan_Albatross/b_0001.png": ("RGB", (0, 250, 90)),
    "003.Sooty_Albatross/c_0001.png": ("L", 240),
    "003.Sooty_Albatross/c_0002.png": ("RGB", (90, 90, 255)),
    "003.Sooty_Albatross/c_0003.png": ("RGB", (1, 2, 3)),
}


def fake_cub(root):
    base = root / "CUB_200_2011"
    expected = {}
    for relative, (mode, colour) in CUB_IMAGES.items():
        expected[relative] = solid_image(base / "images" / relative, colour, mode)
    lines = list(enumerate(CUB_IMAGES, start=1))
    (base / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel in lines))
    labels = "".join(f"{i} {int(rel[:3])}\n" for i, rel in lines)
    (base / "image_class_labels.txt").write_text(labels)
    return expected


def values_by_class(image_set):
    result = {}
    for image, label in zip(image_set.images, image_set.labels.tolist()):
        assert (image == image[0, 0, 0]).all()  # solid images stay solid
        result.setdefault(image_set.class_names[label], []).append(int(image[0, 0, 0]))
    return {name: sorted(values) for name, values in result.items()}


def test_cub_fake_layout(tmp_path):
    expected = fake_cub(tmp_path)
    image_set = load_cub(tmp_path, size=5)
    walked = sorted(p.name for p in (tmp_path / "CUB_200_2011" / "images").iterdir())
    assert image_set.class_names == walked
    assert image_set.images.shape == (6, 1, 5, 5)
    reference = {}
    for relative, value in expected.items():
        reference.setdefault(relative.split("/")[0], []).append(value)
    assert values_by_class(image_set) == {k: sorted(v) for k, v in reference.items()}


def test_cub_missing_file_and_malformed_lines(tmp_path):
    fake_cub(tmp_path)
    labels_file = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    good = labels_file.read_text()
    labels_file.write_text(good.replace("2 1\n", "2 one\n"))
    with pytest.raises(ValueError, match=r"image_class_labels\.txt, line 2"):
        load_cub(tmp_path)
    labels_file.write_text(good.replace("3 2\n", "3 201\n"))
    with pytest.raises(ValueError, match=r"line 3: expected .*class_id from 1 to 200"):
        load_cub(tmp_path)
    labels_file.write_text(good.replace("4 3\n", "5 3\n"))
    with pytest.raises(ValueError, match="image_id"):
        load_cub(tmp_path)
    labels_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"class_labels\.txt is missing.*CUB_200_2011/"):
        load_cub(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CUB-200-2011 root .*elsewhere does not exist"):
        load_cub(tmp_path / "elsewhere")


def test_cub_missing_image_is_named(tmp_path):
    fake_cub(tmp_path)
    missing = tmp_path / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / "b_0001.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="b_0001.png"):
        load_cub(tmp_path)


CAR_NAMES = ["Audi A4 2010", "Ram C/V Cargo Van Minivan 2012", "BMW X5 2012"]


def fake_cars(root):
    (root / "names.csv").write_text("".join(f"{name}\n" for name in CAR_NAMES))
    rows = {
        "train": [
            ("00001.jpg", 1, (10, 20, 30)),
            ("00002.jpg", 3, 77),
            ("00003.jpg", 2, (5, 5, 5)),
        ],
        "test": [("00004.jpg", 3, (250, 0, 0)), ("00005.jpg", 1, 128)],
    }
    expected = {}
    for split, entries in rows.items():
        lines = []
        for file, class_id, colour in entries:
            class_folder = CAR_NAMES[class_id - 1].replace("/", "-")
            folder = root / "car_data" / "car_data" / split / class_folder
            mode = "L" if isinstance(colour, int) else "RGB"
            solid_image(folder / file, colour, mode)
            # JPEG is lossy: read back the stored value as the reference
            value = int(np.asarray(Image.open(folder / file).convert("L")).mean().round())
            expected.setdefault(class_id, []).append(value)
            lines.append(f"{file},1,2,30,40,{class_id}\n")
        (root / f"anno_{split}.csv").write_text("".join(lines))
    return expected


def test_cars196_fake_layout(tmp_path):
    expected = fake_cars(tmp_path)
    image_set = load_cars196(tmp_path, size=4)
    assert image_set.class_names == [
        "001.Audi A4 2010",
        "002.Ram C/V Cargo Van Minivan 2012",
        "003.BMW X5 2012",
    ]
    assert image_set.labels.bincount().tolist() == [2, 1, 2]
    got = values_by_class(image_set)
    for class_id, values in expected.items():
        observed = got[image_set.class_names[class_id - 1]]
        assert np.allclose(observed, sorted(values), atol=2)


def test_cars196_errors(tmp_path):
    fake_cars(tmp_path)
    anno = tmp_path / "anno_test.csv"
    good = anno.read_text()
    anno.write_text(good + "00006.jpg,1,2,3\n")
    with pytest.raises(ValueError, match=r"anno_test\.csv, line 3"):
        load_cars196(tmp_path)
    anno.write_text(good.replace(",3\n", ",4\n"))
    with pytest.raises(ValueError, match=r"anno_test\.csv, line 1: .*class_id from 1 to 3"):
        load_cars196(tmp_path)
    anno.write_text("Image,x1,y1,x2,y2,Class\n" + good)
    with pytest.raises(ValueError, match=r"anno_test\.csv, line 1"):
        load_cars196(tmp_path)
    anno.unlink()
    with pytest.raises(FileNotFoundError, match=r"anno_test\.csv is missing.*names\.csv"):
        load_cars196(tmp_path)


def fake_sop(root):
    base = root / "Stanford_Online_Products"
    rows = {
        "train": [
            (1, 1, 1, "bicycle_final/1_0.JPG", (3, 200, 3)),
            (2, 1, 1, "bicycle_final/1_1.JPG", 60),
            (3, 2, 2, "chair_final/2_0.JPG", (100, 100, 100)),
        ],
        "test": [
            (4, 11, 3, "mug_final/11_0.JPG", 200),
            (5, 11, 3, "mug_final/11_1.JPG", (0, 0, 255)),
        ],
    }
    for split, entries in rows.items():
        lines = ["image_id class_id super_class_id path\n"]
        for image_id, class_id, super_id, path, colour in entries:
            solid_image(base / path, colour, "L" if isinstance(colour, int) else "RGB")
            lines.append(f"{image_id} {class_id} {super_id} {path}\n")
        (base / f"Ebay_{split}.txt").write_text("".join(lines))


def test_sop_fake_layout(tmp_path):
    fake_sop(tmp_path)
    image_set = load_sop(tmp_path, size=3)
    assert image_set.class_names == ["00001", "00002", "00011"]
    assert image_set.labels.bincount().tolist() == [2, 1, 2]
    walked = sum(1 for _ in (tmp_path / "Stanford_Online_Products").glob("*/*.JPG"))
    assert image_set.images.shape == (walked, 1, 3, 3)


def test_sop_errors(tmp_path):
    fake_sop(tmp_path)
    train = tmp_path / "Stanford_Online_Products" / "Ebay_train.txt"
    good = train.read_text()
    train.write_text(good.replace("2 1 1 bicycle", "2 x 1 bicycle"))
    with pytest.raises(ValueError, match=r"Ebay_train\.txt, line 3"):
        load_sop(tmp_path)
    train.write_text(good + "\n")
    with pytest.raises(ValueError, match=r"Ebay_train\.txt, line 5: blank line"):
        load_sop(tmp_path)
    (tmp_path / "Stanford_Online_Products" / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Ebay_test\.txt is missing.*Online_Products/"):
        load_sop(tmp_path)


# ---------------------------------------------------------------------------------------------
# Generic image folder


def fake_folder(root):
    values = {
        "cat/1.png": ("RGB", (255, 0, 0)),
        "cat/2.PNG": ("L", 12),
        "dog/a.bmp": ("RGB", (0, 0, 255)),
        "dog/b.png": ("L", 99),
        "dog/c.png": ("RGB", (10, 220, 40)),
    }
    for relative, (mode, colour) in values.items():
        solid_image(root / relative, colour, mode)
    (root / "dog" / "notes.txt").write_text("not an image")
    solid_image(root / ".hidden" / "x.png", 0, "L")
    (root / "stray.png").write_bytes(png_bytes(3))
    return values


def test_image_folder_loads_classes_in_sorted_order(tmp_path):
    values = fake_folder(tmp_path)
    with pytest.warns(DataWarning, match="3 entries skipped beside the 5 images read"):
        image_set = load_image_folder(tmp_path, size=6)
    assert image_set.class_names == ["cat", "dog"]
    expected = {}
    for relative, (mode, colour) in values.items():
        value = colour if mode == "L" else luma(colour)
        expected.setdefault(relative.split("/")[0], []).append(value)
    assert values_by_class(image_set) == {k: sorted(v) for k, v in expected.items()}
    assert image_set.images.shape == (5, 1, 6, 6)


def test_image_folder_cache(tmp_path, monkeypatch):
    fake_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "data", size=6, cache_dir=cache)
    assert len(list(cache.glob("folder-*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode_module, "decode_images", fail)
    cached = load_image_folder(tmp_path / "data", size=6, cache_dir=cache)
    assert torch.equal(cached.images, first.images) and cached.class_names == first.class_names
    monkeypatch.undo()
    changed = tmp_path / "data" / "cat" / "1.png"
    solid_image(changed, 50, "L")
    os.utime(changed, ns=(10**18, 10**18))
    updated = load_image_folder(tmp_path / "data", size=6, cache_dir=cache)
    assert len(list(cache.glob("folder-*.pt"))) == 2
    assert 50 in values_by_class(updated)["cat"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"1 class folder\(s\) hold no image PIL opens: only_text; .* Skipped"):
        load_image_folder(tmp_path)
    (tmp_path / "only_text" / "readme.txt").unlink()
    (tmp_path / "only_text").rmdir()
    solid_image(tmp_path / "broken" / "bad.png", 0, "L")
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode image .*bad.png"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="size"):
        load_image_folder(tmp_path, size=0)


# ---------------------------------------------------------------------------------------------
# Feature files


def test_features_with_integer_labels(tmp_path):
    features = np.arange(8, dtype=np.float64).reshape(4, 2)
    np.savez(tmp_path / "f.npz", features=features, labels=np.array([10, 2, 2, 7]))
    feature_set = load_features(tmp_path / "f.npz")
    assert feature_set.class_names == ["02", "07", "10"]
    assert feature_set.labels.tolist() == [2, 0, 0, 1]
    assert feature_set.features.dtype == torch.float32
    assert torch.equal(feature_set.features, torch.tensor(features, dtype=torch.float32))


def test_features_with_string_labels(tmp_path):
    labels = np.array(["owl", "cat", "owl"])
    np.savez(tmp_path / "f.npz", features=np.ones((3, 5), np.float32), labels=labels)
    feature_set = load_features(tmp_path / "f.npz")
    assert feature_set.class_names == ["cat", "owl"] and feature_set.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"features": np.ones((3, 2))}, r"lacks the array\(s\) \['labels'\]"),
        ({"feats": np.ones((3, 2)), "labels": np.zeros(3, int)}, "'features'"),
        ({"features": np.ones((3, 2)), "labels": np.zeros(4, int)}, "3 rows but 'labels' has 4"),
        ({"features": np.ones(3), "labels": np.zeros(3, int)}, r"shape \(N, D\)"),
        ({"features": np.ones((3, 2)), "labels": np.zeros((3, 1), int)}, r"shape \(N,\)"),
        ({"features": np.ones((2, 2)), "labels": np.array([-1, 0])}, ">= 0"),
        ({"features": np.ones((2, 2)), "labels": np.array([0.5, 1.0])}, "integers or strings"),
        ({"features": np.array([[1.0, np.nan]]), "labels": np.array([0])}, "NaN"),
    ],
)
def test_features_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_features(tmp_path / "f.npz")


def test_features_missing_file_and_plain_npy(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_features(tmp_path / "none.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match="single .npy array"):
        load_features(tmp_path / "x.npy")


def test_features_files_that_only_unpickling_could_read_are_refused_without_advising_it(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not an archive")
    np.savez(tmp_path / "objects.npz", features=np.array([[1.0], [2.0]], dtype=object), labels=np.arange(2))
    for name, message in [("garbage.npz", "is not an .npz or .npy file"), ("objects.npz", "hold Python objects")]:
        with pytest.raises(ValueError, match=message) as info:
            load_features(tmp_path / name)
        assert "allow_pickle" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Registry


def test_dataset_names_and_unknown_name():
    names = dataset_names()
    assert names == ["glyphs", "omniglot", "cub", "cars196", "sop", "folder", "features", "arrays"]
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet", None, 32, "cache")
    assert all(name in str(info.value) for name in names)


def test_load_dataset_dispatches(tmp_path):
    fake_folder(tmp_path / "folder")
    via_name = load_dataset("folder", str(tmp_path / "folder"), 6, str(tmp_path / "cache"))
    direct = load_image_folder(tmp_path / "folder", size=6)
    assert torch.equal(via_name.images, direct.images)
    assert via_name.class_names == direct.class_names
    assert list((tmp_path / "cache").glob("folder-*.pt"))

    np.savez(tmp_path / "f.npz", features=np.ones((2, 3)), labels=np.array([1, 0]))
    features = load_dataset("features", str(tmp_path / "f.npz"), 0, str(tmp_path))
    assert isinstance(features, FeatureSet)

    glyph_set = load_dataset("glyphs", None, 16, str(tmp_path / "g"), num_classes=4, per_class=2)
    assert glyph_set.images.shape == (8, 1, 16, 16)
    assert (tmp_path / "g" / "glyphs-v1-c4-n2-s16-seed0.pt").is_file()

    fake_cub(tmp_path / "cub")
    assert load_dataset("cub", str(tmp_path / "cub"), 4, str(tmp_path / "cache")).num_classes == 3
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("omniglot", None, 32, str(tmp_path))
    with pytest.raises(ValueError, match="dataset 'cub' has no option num_classes; its options: none"):
        load_dataset("cub", str(tmp_path / "cub"), 4, str(tmp_path / "cache"), num_classes=3)


def test_roots_of_the_wrong_kind_are_named_as_such(tmp_path):
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    for load in (load_omniglot, load_image_folder, load_cub, load_cars196, load_sop):
        with pytest.raises(NotADirectoryError, match=f"{a_file} is a file, not a folder; expected "):
            load(a_file)
    with pytest.raises(IsADirectoryError, match=f"features file {tmp_path} is a folder, not a file"):
        load_features(tmp_path)


def test_require_path_checks_the_kind_it_is_given(tmp_path):
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    require_path(tmp_path, "root", "anything", kind="folder")
    require_path(a_file, "file", "anything", kind="file")
    with pytest.raises(FileNotFoundError, match=f"root {tmp_path / 'no'} does not exist; expected L"):
        require_path(tmp_path / "no", "root", "L", kind="file")
    with pytest.raises(ValueError, match="kind must be 'folder' or 'file', got 'link'"):
        require_path(tmp_path, "root", "L", kind="link")
