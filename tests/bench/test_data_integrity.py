"""Data is never lost or corrupted without a word: listings account for every file (each skipped
one counted and named, a class left without images, a repeated line and a missing header refused
with file and line), decoding is right or loud (high-depth images scaled, damaged JPEG data warned
about, undecodable files named), caches are rebuilt when they cannot be read, and
``pml-bench check-data`` lists every problem file."""

import io
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.data import (
    DataWarning,
    ImageDecodeError,
    list_cars196,
    list_cub,
    list_image_folder,
    list_sop,
    load_arrays,
    load_glyphs,
    load_image_folder,
)
from pml_regularizers.bench.data.cache import load_image_set
from pml_regularizers.bench.data.decode import read_image, readable_suffixes

from .trees import TREE_WRITERS, write_image


def gradient_rgb(width=160, height=120):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 3) % 256, (y * 5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def jpeg_bytes(array, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def damage_scan(data):
    """``data`` with 100 bytes cut from the middle of its entropy-coded scan, as a transfer that
    lost a block leaves it: libjpeg decodes it, into garbage below the cut, and reports the damage
    (damage that leaves a valid code stream of the right length is beyond any decoder's notice).
    The cut never splits a marker or a stuffed 0xFF byte."""
    start = int(len(data) * 0.4)
    while 0xFF in data[start - 1 : start + 1] or 0xFF in data[start + 99 : start + 101]:
        start += 1
    return data[:start] + data[start + 100 :]


# ---------------------------------------------------------------------------------------------
# Listings that account for every file


def test_every_format_pil_opens_is_listed_and_every_skipped_entry_is_counted_and_named(tmp_path):
    root = tmp_path / "data"
    for name in ("a.png", "b.webp", "c.tif", "d.JPG", "e.gif"):
        write_image(root / "class_a" / name, "RGB", (20, 16), seed=len(name))
    write_image(root / "class_b" / "x.png", "RGB", (20, 16))
    (root / "class_b" / "notes.txt").write_text("not an image")
    (root / "class_b" / ".DS_Store").write_bytes(b"\0")
    os.symlink(root / "nowhere.jpg", root / "class_b" / "dangling.jpg")
    (root / "class_b" / "sub").mkdir()
    (root / "stray.png").write_bytes((root / "class_b" / "x.png").read_bytes())
    with pytest.warns(DataWarning) as record:
        files = list_image_folder(root)
    assert sorted(p.name for p in files.paths) == ["a.png", "b.webp", "c.tif", "d.JPG", "e.gif", "x.png"]
    (warning,) = record
    message = str(warning.message)
    assert f"image folder {root}: 5 entries skipped beside the 6 images read" in message
    for reason, name in [
        ("not of a format PIL opens (by suffix): 1", "class_b/notes.txt"),
        ("hidden (name starting with '.'): 1", "class_b/.DS_Store"),
        ("dangling symlink: 1", "class_b/dangling.jpg"),
        ("folder inside a class folder: 1", "class_b/sub"),
        ("outside the class folders: 1", "stray.png"),
    ]:
        assert f"{reason} ({name})" in message
    assert len(warning.message.files) == 5
    assert {".webp", ".tif", ".tiff", ".jpg", ".png", ".gif", ".bmp"} <= readable_suffixes()


def test_a_class_whose_files_are_all_skipped_is_refused_not_dropped(tmp_path):
    """It used to vanish, and with the classes sorted and halved a test class became a training
    class."""
    root = TREE_WRITERS["folder"](tmp_path / "data", classes=4, per_class=2)
    for path in (root / "class_002").iterdir():
        path.rename(path.with_suffix(".raw"))
    with pytest.raises(ValueError) as info:
        list_image_folder(root)
    message = str(info.value)
    assert "1 class folder(s) hold no image PIL opens: class_002" in message
    assert "not of a format PIL opens (by suffix): 2 (class_002/0000.raw, class_002/0001.raw)" in message


def test_two_names_of_one_file_are_refused(tmp_path):
    root = TREE_WRITERS["folder"](tmp_path / "data", classes=2, per_class=2)
    os.symlink(root / "class_001" / "0000.jpg", root / "class_002" / "copy.jpg")
    with pytest.raises(ValueError, match=r"class_001/0000\.jpg and .*class_002/copy\.jpg are the same file"):
        list_image_folder(root)


def test_sop_without_its_header_is_refused_naming_the_file_and_line(tmp_path):
    """The first image used to be read as the header and dropped."""
    root = TREE_WRITERS["sop"](tmp_path / "sop", classes=4, per_class=2)
    train = root / "Stanford_Online_Products" / "Ebay_train.txt"
    good = train.read_text()
    train.write_text(good.split("\n", 1)[1])
    with pytest.raises(ValueError, match=rf"{train}, line 1: an image line where the header .* add the header"):
        list_sop(root)
    train.write_text("id class super path\n" + good.split("\n", 1)[1])
    with pytest.raises(ValueError, match=rf"{train}, line 1: expected the header 'image_id class_id super_class_id"):
        list_sop(root)
    train.write_text(good)
    assert len(list_sop(root).paths) == 8


def test_sop_lines_listing_one_image_twice_are_refused(tmp_path):
    root = TREE_WRITERS["sop"](tmp_path / "sop", classes=4, per_class=2)
    base = root / "Stanford_Online_Products"
    train, test = base / "Ebay_train.txt", base / "Ebay_test.txt"
    lines = train.read_text().splitlines(keepends=True)
    test.write_text(test.read_text() + lines[1].replace("1 1 1 ", "99 1 1 "))  # the path again, another id
    with pytest.raises(ValueError, match=rf"{test}, line 6: the image \S+ is listed again \({train}, line 2\)"):
        list_sop(root)


def test_cub_lines_repeated_in_both_annotation_files_are_refused(tmp_path):
    """One file used to become two samples, each the other's nearest neighbour (P@1 inflated)."""
    root = TREE_WRITERS["cub"](tmp_path / "cub", classes=2, per_class=3)
    base = root / "CUB_200_2011"
    for name in ("images.txt", "image_class_labels.txt"):
        lines = (base / name).read_text().splitlines(keepends=True)
        (base / name).write_text("".join([*lines, lines[2]]))
    with pytest.raises(ValueError, match=r"images\.txt, line 7: image_id 3 is listed again \(line 3\)"):
        list_cub(root)
    images = (base / "images.txt").read_text().splitlines(keepends=True)
    (base / "images.txt").write_text("".join([*images[:6], images[2].replace("3 ", "7 ", 1)]))
    labels = (base / "image_class_labels.txt").read_text().splitlines(keepends=True)
    (base / "image_class_labels.txt").write_text("".join([*labels[:6], labels[2].replace("3 ", "7 ", 1)]))
    with pytest.raises(ValueError, match=r"images\.txt, line 7: the image \S+ is listed again \(line 3\)"):
        list_cub(root)


def test_cars196_repeats_and_classes_without_images_are_refused(tmp_path):
    root = TREE_WRITERS["cars196"](tmp_path / "cars", classes=3, per_class=2)
    train = root / "anno_train.csv"
    good = train.read_text()
    train.write_text(good + good.splitlines(keepends=True)[0])
    with pytest.raises(ValueError, match=r"anno_train\.csv, line 4: the image 00001\.\S+ is listed again \(line 1\)"):
        list_cars196(root)
    train.write_text(good)
    names = root / "names.csv"
    names.write_text(names.read_text() + "Brand4 Coupe 4 2013\n")
    with pytest.raises(ValueError, match=r"class_id 4 of 1\.\.4 has no image"):
        list_cars196(root)


# ---------------------------------------------------------------------------------------------
# Decoding that is right or loud


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit PNG used to arrive almost white (mean 254 of 255; the true mean is 128)."""
    deep = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    expected = np.rint(deep / 257.0)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"deep{suffix}"
        Image.fromarray(deep).save(path)
        assert Image.open(path).mode.startswith("I;16")
        gray = np.asarray(read_image(path, "L"), dtype=np.float64)
        np.testing.assert_array_equal(gray, expected)
        assert abs(gray.mean() - deep.mean() / 257) < 0.01  # 127.5, not 254
        rgb = np.asarray(read_image(path, "RGB"))
        assert (rgb == expected[..., None]).all()
    floats = tmp_path / "float.tif"
    Image.fromarray((deep / 65535).astype(np.float32)).save(floats)
    np.testing.assert_allclose(np.asarray(read_image(floats, "L"), dtype=np.float64), expected, atol=1)
    Image.fromarray(deep.astype(np.float32)).save(floats)  # floats beyond [0, 1]: the scale is unknown
    with pytest.raises(ImageDecodeError, match=rf"cannot decode image {floats}: its F pixels range from 0 to"):
        read_image(floats, "L")


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 75, "subsampling": 0}, {"progressive": True}])
def test_clean_jpegs_decode_to_pils_pixels_without_a_warning(tmp_path, mode, options):
    path = tmp_path / "clean.jpg"
    Image.fromarray(gradient_rgb()).convert(mode).save(path, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for target in ("RGB", "L"):
            ours = np.asarray(read_image(path, target))
            pils = np.asarray(Image.open(path).convert(target))
            np.testing.assert_array_equal(ours, pils)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_damaged_jpeg_data_is_decoded_as_pil_decodes_it_with_a_warning_naming_the_file(tmp_path, mode):
    """It used to decode to garbage below 40% of its height and be trained on without a word."""
    path = tmp_path / "damaged.jpg"
    clean = io.BytesIO()
    Image.fromarray(gradient_rgb()).convert(mode).save(clean, format="JPEG", quality=90)
    path.write_bytes(damage_scan(clean.getvalue()))
    with pytest.warns(DataWarning, match=rf"damaged image data in {path} \(Corrupt JPEG data"):
        ours = np.asarray(read_image(path, "RGB"))
    np.testing.assert_array_equal(ours, np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("kind", ["truncated", "empty", "text named .jpg", "decompression bomb", "16-bit range"])
def test_undecodable_files_raise_naming_the_file(tmp_path, monkeypatch, kind):
    path = tmp_path / "bad.jpg"
    if kind == "truncated":
        data = jpeg_bytes(gradient_rgb())
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text named .jpg":
        path.write_text("this is not an image")
    elif kind == "decompression bomb":
        path.write_bytes(jpeg_bytes(gradient_rgb()))
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 160 x 120 > 2 x 1000
    else:
        path = tmp_path / "bad.tif"
        Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)).save(path)
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, "RGB")
    assert str(info.value).startswith(f"cannot decode image {path}: ")
    assert isinstance(info.value, ValueError) and info.value.summary == str(info.value)


def test_an_undecodable_file_of_the_grayscale_pipeline_names_it(tmp_path):
    root = TREE_WRITERS["folder"](tmp_path / "data", classes=2, per_class=2)
    (root / "class_001" / "0000.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ImageDecodeError, match=f"cannot decode image {root / 'class_001' / '0000.jpg'}"):
        load_image_folder(root, size=8)


# ---------------------------------------------------------------------------------------------
# Caches are caches


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (Path(self.marker), "ran")


def _spoil(cache_file, kind, tmp_path):
    if kind == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:100])
    elif kind == "poisoned":
        torch.save({"images": _Payload(tmp_path / "marker")}, cache_file)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, cache_file)
    else:  # another layout: images of the wrong dtype
        torch.save(
            {"images": torch.zeros(2, 1, 4, 4), "labels": torch.zeros(2, dtype=torch.int64), "class_names": ["a"]},
            cache_file,
        )


@pytest.mark.parametrize("kind", ["truncated", "poisoned", "foreign", "wrong layout"])
@pytest.mark.parametrize("loader", ["folder", "arrays", "glyphs"])
def test_a_damaged_or_foreign_cache_is_discarded_and_rebuilt_with_a_warning_naming_it(tmp_path, kind, loader):
    cache = tmp_path / "cache"
    if loader == "folder":
        root = TREE_WRITERS["folder"](tmp_path / "data", classes=2, per_class=2)

        def load():
            return load_image_folder(root, size=8, cache_dir=cache)

    elif loader == "arrays":
        np.savez(tmp_path / "a.npz", images=np.arange(4 * 5 * 5, dtype=np.uint8).reshape(4, 5, 5), labels=np.arange(4))

        def load():
            return load_arrays(tmp_path / "a.npz", size=8, cache_dir=cache)

    else:

        def load():
            return load_glyphs(cache, num_classes=2, per_class=2, size=16)

    fresh = load()
    (cache_file,) = list(cache.glob("*.pt"))
    _spoil(cache_file, kind, tmp_path)
    with pytest.warns(DataWarning) as record:
        rebuilt = load()
    (warning,) = [w for w in record if issubclass(w.category, DataWarning)]
    message = str(warning.message)
    assert message.startswith(f"discarding the cache file {cache_file} (") and "decoding the data again" in message
    assert "weights_only" not in message
    assert not (tmp_path / "marker").exists()  # the payload never ran
    assert torch.equal(rebuilt.images, fresh.images) and rebuilt.class_names == fresh.class_names
    assert torch.equal(load_image_set(cache_file).images, fresh.images)  # the rebuilt cache is good
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load()  # and is used without a word


def test_no_message_for_a_file_a_weights_only_load_refuses_advises_turning_it_off(tmp_path):
    path = tmp_path / "poisoned.pt"
    path.write_bytes(pickle.dumps(_Payload(tmp_path / "marker"), protocol=2))
    with pytest.raises(ValueError) as info:
        load_image_set(path)
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------------------------------------
# pml-bench check-data


def problem_tree(root):
    root = TREE_WRITERS["folder"](root, classes=4, per_class=3)
    bad = root / "class_001"
    data = jpeg_bytes(gradient_rgb(), quality=90)
    (bad / "damaged.jpg").write_bytes(damage_scan(data))
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("hello")
    (root / "class_002" / "notes.txt").write_text("x")
    return root


def test_check_data_lists_every_problem_file(tmp_path, capsys):
    root = problem_tree(tmp_path / "data")
    out = tmp_path / "problems.json"
    status = cli_main(["check-data", "dataset=folder", f"dataset.root={root}", "--workers", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 1
    assert f"decoded 16 images of 4 classes (dataset=folder, root {root})" in printed and "5 problem files" in printed
    found = json.loads(out.read_text())
    kinds = {Path(p["file"]).name: p["kind"] for p in found["problems"]}
    assert kinds == {
        "damaged.jpg": "damaged",
        "truncated.jpg": "undecodable",
        "empty.png": "undecodable",
        "text.jpg": "undecodable",
        "notes.txt": "skipped",
    }
    for name in kinds:
        assert name in printed
    for name in ("damaged.jpg", "truncated.jpg", "empty.png", "text.jpg"):
        (root / "class_001" / name).unlink()
    (root / "class_002" / "notes.txt").unlink()
    assert cli_main(["check-data", "dataset=folder", f"dataset.root={root}", "--workers", "0"]) == 0
    assert "decoded 12 images of 4 classes" in capsys.readouterr().out


def test_check_data_reports_a_listing_it_refuses_as_one_error_line(tmp_path, capsys):
    root = TREE_WRITERS["sop"](tmp_path / "sop", classes=2, per_class=2)
    train = root / "Stanford_Online_Products" / "Ebay_train.txt"
    train.write_text(train.read_text().split("\n", 1)[1])
    assert cli_main(["check-data", "dataset=sop", f"dataset.root={root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pml-bench: error: dataset=sop: ") and f"{train}, line 1" in err and "\n" not in err
