"""CUB-200-2011, Cars196 and Stanford Online Products, read through PML's dataset classes.

PML's classes (``pytorch_metric_learning.datasets``) parse the annotation files into ``paths`` and
1-based ``labels``. The ``list_*`` functions return those files as a :class:`FileSet`, for the
natural-image pipeline that decodes each image when it is served; the ``load_*`` functions decode
every image once (grayscale, resized). PML's parsers skip or crash on unexpected input, so the
annotation files are validated first and any problem is reported with its file and line number:
malformed lines, a missing or wrong header (SOP), an image listed twice (each would be the other's
nearest neighbour), and a class of Cars196's ``names.csv`` without images (the classes after it
would move between the training and the test half).

Class names keep the official class order when sorted: CUB uses its ``NNN.Name`` image folders,
Cars196 ``NNN.<name from names.csv>``, SOP the zero-padded ``class_id``. The first half of the
sorted classes is therefore the usual training half.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytorch_metric_learning.datasets import CUB, Cars196, StanfordOnlineProducts

from .decode import grayscale_loader
from .files import labelled_files
from .images import FileSet
from .paths import require_path

CUB_LAYOUT = "root/CUB_200_2011/{images.txt, image_class_labels.txt, images/NNN.Name/*.jpg}"
CARS_LAYOUT = "root/{names.csv, anno_train.csv, anno_test.csv, car_data/car_data/{train,test}/<class>/*.jpg}"
SOP_LAYOUT = "root/Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>/*.JPG}"
CUB_CLASSES = 200
CARS_CLASSES = 196


def list_cub(root: str | os.PathLike) -> FileSet:
    """List CUB-200-2011's image files (all 200 classes, train and test images), not decoded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``CUB_200_2011`` (the official archive, extracted).

    Returns
    -------
    FileSet
        The files, in the order of ``images.txt``, with class names ``"NNN.Name"`` (the image
        folders).

    Raises
    ------
    FileNotFoundError
        When ``root``, a required file or folder (see ``CUB_LAYOUT``) or an image is missing.
    NotADirectoryError
        When ``root`` is not a folder.
    ValueError
        When an annotation line is malformed or the two annotation files disagree.
    """
    require_path(Path(root), "CUB-200-2011 root", CUB_LAYOUT, kind="folder")
    base = Path(root) / "CUB_200_2011"
    _require([base / "images.txt", base / "image_class_labels.txt", base / "images"], CUB_LAYOUT)
    _validate_cub(base)
    dataset = CUB(str(root), split="train+test", transform=None, download=False)
    paths = [Path(path) for path in dataset.paths]
    _check_one_folder_per_class(paths, dataset.labels, base / "image_class_labels.txt")
    return labelled_files(paths, [path.parent.name for path in paths])


load_cub = grayscale_loader(list_cub, "cub", "CUB-200-2011 (all 200 classes, train and test images)")


def list_cars196(root: str | os.PathLike) -> FileSet:
    """List Cars196's image files in the Kaggle "by classes folder" layout (all 196 classes).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``names.csv``, ``anno_train.csv``, ``anno_test.csv`` and ``car_data``.

    Returns
    -------
    FileSet
        The files, training annotations first, with class names ``"NNN.<name>"`` (1-based class
        id, name from ``names.csv``).

    Raises
    ------
    FileNotFoundError
        When ``root``, ``names.csv``, an annotation file, the image folder ``car_data/car_data``
        (see ``CARS_LAYOUT``) or an image is missing.
    NotADirectoryError
        When ``root`` is not a folder.
    ValueError
        When a line of ``names.csv`` or of an annotation file is malformed.
    """
    root = Path(root)
    require_path(root, "Cars196 root", CARS_LAYOUT, kind="folder")
    annotations = [root / "anno_train.csv", root / "anno_test.csv"]
    _require([root / "names.csv", *annotations, root / "car_data" / "car_data"], CARS_LAYOUT)
    names = _read_names(root / "names.csv")
    used = set()
    for annotation in annotations:
        used |= _validate_cars_annotation(annotation, len(names))
    _refuse_missing_classes(f"{annotations[0]} and {annotations[1]}", used, range(1, len(names) + 1))
    dataset = Cars196(str(root), split="train+test", transform=None, download=False)
    classes = [f"{label:03d}.{names[label - 1]}" for label in dataset.labels]
    return labelled_files([Path(p) for p in dataset.paths], classes)


load_cars196 = grayscale_loader(
    list_cars196, "cars196", 'Cars196 in the Kaggle "by classes folder" layout (all 196 classes)'
)


def list_sop(root: str | os.PathLike) -> FileSet:
    """List Stanford Online Products' image files (all classes, train and test), not decoded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``Stanford_Online_Products``, as extracted from the official archive.

    Returns
    -------
    FileSet
        The files, ``Ebay_train.txt`` first, with class names the ``class_id`` zero-padded to (at
        least) five digits.

    Raises
    ------
    FileNotFoundError
        When ``root``, a required file (see ``SOP_LAYOUT``) or an image is missing.
    NotADirectoryError
        When ``root`` is not a folder.
    ValueError
        When a line of ``Ebay_train.txt`` or ``Ebay_test.txt`` is malformed.
    """
    require_path(Path(root), "Stanford Online Products root", SOP_LAYOUT, kind="folder")
    base = Path(root) / "Stanford_Online_Products"
    annotations = [base / "Ebay_train.txt", base / "Ebay_test.txt"]
    _require(annotations, SOP_LAYOUT)
    _validate_sop(annotations)
    dataset = StanfordOnlineProducts(str(root), split="train+test", transform=None, download=False)
    width = max(5, len(str(max(dataset.labels, default=0))))
    classes = [f"{label:0{width}d}" for label in dataset.labels]
    return labelled_files([Path(p) for p in dataset.paths], classes)


load_sop = grayscale_loader(list_sop, "sop", "Stanford Online Products (all classes, train and test images)")


def _require(paths: Sequence[Path], layout: str) -> None:
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; expected the layout {layout}")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _read_lines(path: Path, expected: str, skip_header: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path``; reject blank lines."""
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if skip_header and number == 1:
                continue
            text = line.strip()
            if not text:
                raise ValueError(f"{path}, line {number}: blank line; expected {expected}")
            yield number, text


def _malformed(path: Path, number: int, text: str, expected: str) -> ValueError:
    return ValueError(f"{path}, line {number}: expected {expected}, got {text!r}")


def _int_rows(path: Path, expected: str) -> list[tuple[int, list[str]]]:
    """Parse lines of two whitespace-separated fields, the first an integer id."""
    rows = []
    for number, text in _read_lines(path, expected):
        fields = text.split()
        if len(fields) != 2 or not _is_int(fields[0]):
            raise _malformed(path, number, text, expected)
        rows.append((number, fields))
    return rows


def _validate_cub(base: Path) -> None:
    images_file = base / "images.txt"
    labels_file = base / "image_class_labels.txt"
    images = _int_rows(images_file, "'<image_id> <relative path>'")
    expected = f"'<image_id> <class_id from 1 to {CUB_CLASSES}>'"
    labels = _int_rows(labels_file, expected)
    for number, fields in labels:
        if not _is_int(fields[1]) or not 1 <= int(fields[1]) <= CUB_CLASSES:
            raise _malformed(labels_file, number, " ".join(fields), expected)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} has {len(images)} lines but {labels_file} has {len(labels)}; "
            "they must list the same images in the same order"
        )
    for (number, image), (_, label) in zip(images, labels):
        if int(image[0]) != int(label[0]):
            raise ValueError(
                f"line {number}: image_id {image[0]} in {images_file} differs from "
                f"{label[0]} in {labels_file}; they must list the same images in the same order"
            )
    _refuse_repeats([(images_file, n, f"image_id {int(f[0])}") for n, f in images])
    _refuse_repeats([(images_file, n, f"the image {f[1]}") for n, f in images])


def _check_one_folder_per_class(paths: list[Path], labels: list[int], labels_file: Path) -> None:
    folders: dict[int, str] = {}
    for path, label in zip(paths, labels):
        folder = folders.setdefault(label, path.parent.name)
        if folder != path.parent.name:
            raise ValueError(
                f"{labels_file}: class_id {label} has images in the folders {folder!r} and "
                f"{path.parent.name!r}; each class must have one folder"
            )
    if len(set(folders.values())) != len(folders):
        raise ValueError(f"{labels_file}: two class_ids share one image folder")


def _read_names(path: Path) -> list[str]:
    names = [text for _, text in _read_lines(path, "one class name per line")]
    if len(names) > CARS_CLASSES:
        raise ValueError(f"{path} lists {len(names)} class names; Cars196 has {CARS_CLASSES}")
    return names


def _validate_cars_annotation(path: Path, num_names: int) -> set[int]:
    """Check the annotation file ``path``; return the class ids it uses."""
    expected = f"'<file>,<x1>,<y1>,<x2>,<y2>,<class_id from 1 to {num_names}>' (no header)"
    files: list[tuple[Path, int, str]] = []
    used: set[int] = set()
    for number, text in _read_lines(path, expected):
        fields = text.split(",")
        valid = len(fields) == 6 and all(_is_int(field) for field in fields[1:])
        if not valid or not 1 <= int(fields[5]) <= num_names:
            raise _malformed(path, number, text, expected)
        files.append((path, number, f"the image {fields[0]}"))
        used.add(int(fields[5]))
    _refuse_repeats(files)
    return used


SOP_HEADER = ("image_id", "class_id", "super_class_id", "path")


def _validate_sop(annotations: Sequence[Path]) -> None:
    """Check ``Ebay_train.txt`` and ``Ebay_test.txt``: the header, each line, and no image listed
    twice (by id or path, over both files)."""
    expected = "'<image_id> <class_id >= 1> <super_class_id> <path>' after a header line"
    ids: list[tuple[Path, int, str]] = []
    paths: list[tuple[Path, int, str]] = []
    for path in annotations:
        _check_sop_header(path)
        for number, text in _read_lines(path, expected, skip_header=True):
            fields = text.split()
            valid = len(fields) == 4 and all(_is_int(field) for field in fields[:3])
            if not valid or int(fields[1]) < 1:
                raise _malformed(path, number, text, expected)
            ids.append((path, number, f"image_id {int(fields[0])}"))
            paths.append((path, number, f"the image {fields[3]}"))
    _refuse_repeats(ids)
    _refuse_repeats(paths)


def _check_sop_header(path: Path) -> None:
    header = " ".join(SOP_HEADER)
    with open(path, encoding="utf-8") as stream:
        first = stream.readline().split()
    if tuple(first) == SOP_HEADER:
        return
    if not first:
        raise ValueError(f"{path}, line 1: missing header line; expected '{header}'")
    if len(first) == 4 and all(_is_int(field) for field in first[:3]):
        raise ValueError(
            f"{path}, line 1: an image line where the header '{header}' belongs; the header is missing "
            "(read as one, this image would have been dropped): add the header line"
        )
    raise ValueError(f"{path}, line 1: expected the header '{header}', got {' '.join(first)!r}")


def _refuse_repeats(items: Sequence[tuple[Path, int, str]]) -> None:
    """Refuse an item listed twice; ``items`` are ``(file, line number, what the line lists)``."""
    seen: dict[str, tuple[Path, int]] = {}
    for path, number, what in items:
        if what in seen:
            first_path, first_number = seen[what]
            first = f"line {first_number}" if first_path == path else f"{first_path}, line {first_number}"
            raise ValueError(
                f"{path}, line {number}: {what} is listed again ({first}); an image listed twice becomes "
                "two samples, each the other's nearest neighbour: remove the repeated line"
            )
        seen[what] = (path, number)


def _refuse_missing_classes(where: str, used: set[int], expected: range) -> None:
    """Refuse class ids of ``expected`` (the classes ``names.csv`` lists) that no image of
    ``where`` (the annotation files) uses."""
    missing = [c for c in expected if c not in used]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ValueError(
            f"{where}: class_id {shown} of {expected.start}..{expected.stop - 1} has no image; a class without "
            "images would drop out of the sorted class list and move the classes after it between the training "
            "and the test half"
        )
