"""Generated data-set trees in the exact layouts of CUB-200-2011, Cars196, Stanford Online Products
and a class folder, holding real image files of varied sizes and PIL modes.

Every ``write_*_tree(root, classes, per_class, modes, sizes, colour)`` writes ``classes`` classes
of ``per_class`` images under ``root`` and returns ``root``. Image ``k`` of the tree (counted over
all classes, class by class) gets the mode ``modes[k % len(modes)]`` and the size
``sizes[k % len(sizes)]``. The modes are those of real data sets: ``"RGB"``, ``"L"`` (grayscale)
and ``"CMYK"`` are written as JPEG, ``"RGBA"`` (with a varying alpha) and ``"P"`` (palette) as
PNG, named ``.png``. The pixels are a seeded colour pattern (so crops of an image differ), or the
solid ``colour`` when one is given. Class names follow the data set (CUB's ``"NNN.Name"``
folders, Cars196 names with a ``/`` in some, which the folder names replace by ``-``, SOP's
numeric class ids under super-class folders, training classes and test classes disjoint).
``write_bulk_folder`` writes thousands of copies of one JPEG quickly, and ``TREE_WRITERS`` maps
the runner's dataset names to the writers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("RGB", "L", "CMYK", "RGBA", "P")
SIZES = ((48, 40), (36, 52), (64, 64), (40, 30), (57, 45))  # (width, height)
PNG_MODES = frozenset({"RGBA", "P"})
SOP_SUPER_CLASSES = ("bicycle_final", "chair_final", "mug_final")

Colour = tuple[int, int, int]


def write_image(
    path: Path,
    mode: str = "RGB",
    size: tuple[int, int] = (48, 40),
    colour: Colour | None = None,
    seed: int = 0,
) -> Path:
    """Write one real image file in ``mode`` (format from the suffix) and return its path.

    The pixels are the solid RGB ``colour`` when given, else a pattern drawn from ``seed``;
    they are converted to ``mode`` (``"RGBA"`` gets an alpha gradient, ``"P"`` a 64-colour
    adaptive palette).
    """
    width, height = size
    if colour is None:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:height, 0:width]
        slopes = rng.uniform(1.0, 8.0, (3, 2))
        offsets = rng.integers(0, 256, 3)
        gradient = np.stack([(offsets[c] + slopes[c, 0] * x + slopes[c, 1] * y) % 256 for c in range(3)], axis=-1)
        pixels = (gradient + rng.integers(0, 48, (height, width, 3))).clip(0, 255)
        rgb = Image.fromarray(pixels.astype(np.uint8), "RGB")
    else:
        rgb = Image.new("RGB", size, colour)
    if mode == "RGBA":
        image = rgb.copy()
        alpha = np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
        image.putalpha(Image.fromarray(alpha, "L"))
    elif mode == "P":
        image = rgb.quantize(64)
    else:
        image = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def image_suffix(mode: str, jpeg_suffix: str = ".jpg") -> str:
    """The file suffix a tree gives an image of ``mode``: ``.png`` for RGBA and P, else JPEG's."""
    return ".png" if mode in PNG_MODES else jpeg_suffix


def _plan(
    classes: int, per_class: int, modes: Sequence[str], sizes: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int, str, tuple[int, int]]]:
    """``(k, class_id from 1, index in class, mode, size)`` for every image, class by class."""
    if classes < 1 or per_class < 1 or not modes or not sizes:
        raise ValueError("a tree needs classes >= 1, per_class >= 1, some modes and some sizes")
    plan = []
    for c in range(classes):
        for i in range(per_class):
            k = c * per_class + i
            plan.append((k, c + 1, i, modes[k % len(modes)], sizes[k % len(sizes)]))
    return plan


def _write_tree(
    classes: int,
    per_class: int,
    modes: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    colour: Colour | None,
    path_of: Callable[[int, int, str, tuple[int, int]], Path],
) -> list[tuple[int, int, Path, tuple[int, int]]]:
    """Write every image of a tree, what the four writers share: image ``k`` (class ``c`` from 1,
    index ``i`` in it, with its mode and size from :func:`_plan`) goes to ``path_of(c, i, mode,
    size)``, its pixels seeded by ``k``. Returns ``(k, c, path, size)`` of each image, in order."""
    written = []
    for k, c, i, mode, size in _plan(classes, per_class, modes, sizes):
        path = write_image(path_of(c, i, mode, size), mode, size, colour, seed=k)
        written.append((k, c, path, size))
    return written


def write_cub_tree(
    root: Path,
    classes: int = 4,
    per_class: int = 3,
    modes: Sequence[str] = MODES,
    sizes: Sequence[tuple[int, int]] = SIZES,
    colour: Colour | None = None,
) -> Path:
    """Write ``root/CUB_200_2011/{images.txt, image_class_labels.txt, images/NNN.Name/*}``.

    Class ``c`` (1 to ``classes`` <= 200) is the folder ``"{c:03d}.Bird_{c}"``.
    """
    images = Path(root) / "CUB_200_2011" / "images"

    def path_of(c: int, i: int, mode: str, size: tuple[int, int]) -> Path:
        return images / f"{c:03d}.Bird_{c}" / f"Bird_{c}_{i:04d}{image_suffix(mode)}"

    written = _write_tree(classes, per_class, modes, sizes, colour, path_of)
    base = images.parent
    (base / "images.txt").write_text("".join(f"{k + 1} {path.relative_to(images)}\n" for k, _, path, _ in written))
    (base / "image_class_labels.txt").write_text("".join(f"{k + 1} {c}\n" for k, c, _, _ in written))
    return Path(root)


def cars196_names(classes: int) -> list[str]:
    """The class names :func:`write_cars196_tree` puts in ``names.csv``; even ids hold a ``/``."""
    return [f"Brand{c} C/V Van {c} 2012" if c % 2 == 0 else f"Brand{c} Sedan {c} 2011" for c in range(1, classes + 1)]


def write_cars196_tree(
    root: Path,
    classes: int = 4,
    per_class: int = 3,
    modes: Sequence[str] = MODES,
    sizes: Sequence[tuple[int, int]] = SIZES,
    colour: Colour | None = None,
) -> Path:
    """Write ``root/{names.csv, anno_train.csv, anno_test.csv, car_data/car_data/{train,test}/}``.

    Every class has images in both splits (even images to train, odd ones to test), numbered
    ``00001`` upwards in each split separately, as in the Kaggle layout.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = cars196_names(classes)
    (root / "names.csv").write_text("".join(f"{name}\n" for name in names))
    lines: dict[str, list[str]] = {"train": [], "test": []}

    def path_of(c: int, i: int, mode: str, size: tuple[int, int]) -> Path:
        split = "train" if i % 2 == 0 else "test"
        file = f"{len(lines[split]) + 1:05d}{image_suffix(mode)}"
        lines[split].append(f"{file},1,2,{size[0] - 2},{size[1] - 1},{c}\n")
        return root / "car_data" / "car_data" / split / names[c - 1].replace("/", "-") / file

    _write_tree(classes, per_class, modes, sizes, colour, path_of)
    for split, rows in lines.items():
        (root / f"anno_{split}.csv").write_text("".join(rows))
    return root


def write_sop_tree(
    root: Path,
    classes: int = 4,
    per_class: int = 3,
    modes: Sequence[str] = MODES,
    sizes: Sequence[tuple[int, int]] = SIZES,
    colour: Colour | None = None,
) -> Path:
    """Write ``root/Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>/*}``.

    The first ``ceil(classes / 2)`` class ids go to ``Ebay_train.txt``, the others to
    ``Ebay_test.txt``; class ``c`` lies in the super-class folder ``SOP_SUPER_CLASSES[(c - 1) %
    3]`` as ``"{c}_{i}.JPG"``.
    """
    base = Path(root) / "Stanford_Online_Products"

    def path_of(c: int, i: int, mode: str, size: tuple[int, int]) -> Path:
        return base / SOP_SUPER_CLASSES[(c - 1) % len(SOP_SUPER_CLASSES)] / f"{c}_{i}{image_suffix(mode, '.JPG')}"

    header = "image_id class_id super_class_id path\n"
    lines = {"train": [header], "test": [header]}
    for k, c, path, _ in _write_tree(classes, per_class, modes, sizes, colour, path_of):
        split = "train" if c <= (classes + 1) // 2 else "test"
        super_id = (c - 1) % len(SOP_SUPER_CLASSES) + 1
        lines[split].append(f"{k + 1} {c} {super_id} {path.relative_to(base)}\n")
    for split, rows in lines.items():
        (base / f"Ebay_{split}.txt").write_text("".join(rows))
    return Path(root)


def write_folder_tree(
    root: Path,
    classes: int = 4,
    per_class: int = 3,
    modes: Sequence[str] = MODES,
    sizes: Sequence[tuple[int, int]] = SIZES,
    colour: Colour | None = None,
) -> Path:
    """Write ``root/class_NNN/NNNN.{jpg,png}``, classes ``class_001`` upwards."""

    def path_of(c: int, i: int, mode: str, size: tuple[int, int]) -> Path:
        return Path(root) / f"class_{c:03d}" / f"{i:04d}{image_suffix(mode)}"

    _write_tree(classes, per_class, modes, sizes, colour, path_of)
    return Path(root)


def write_bulk_folder(root: Path, images: int, classes: int = 10, size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``images`` copies of one RGB JPEG as ``root/class_NNN/NNNNN.jpg``, image ``k`` in
    class folder ``k % classes``: fast (one encoding), for trees of thousands of images."""
    data = write_image(Path(root) / "class_000" / "00000.jpg", "RGB", size).read_bytes()
    for c in range(1, classes):
        (Path(root) / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
    for k in range(1, images):
        (Path(root) / f"class_{k % classes:03d}" / f"{k:05d}.jpg").write_bytes(data)
    return Path(root)


TREE_WRITERS = {
    "cub": write_cub_tree,
    "cars196": write_cars196_tree,
    "sop": write_sop_tree,
    "folder": write_folder_tree,
}
