"""Omniglot (Lake et al., 2015) from its official folders or zip files, or the background set
from one ``.npz`` file.

Accepted inside ``root``: the folders ``images_background``, ``images_evaluation``,
``images_background_small1`` and ``images_background_small2``, each laid out as
``<Alphabet>/characterNN/*.png``, and the official zip files of the same names. Zip files are
extracted (safely) into ``cache_dir``, or into ``root`` when no ``cache_dir`` is given.

A class is ``"<Alphabet>/<characterNN>"``. A class found in several sources (the two "small"
subsets both hold Greek and Latin) is merged, keeping one copy of each image file name. Images
are 1-bit PNGs with a white background and black strokes; they decode to ``uint8`` 255/0 before
resizing.

``images_background.npz`` (read with ``use_npz=True``) holds the whole background set as arrays
(see :func:`~pml_regularizers.bench.data.load_arrays`): ``images`` of shape
``(characters, drawers, H, W)``, ``bool``, True for the white background, and ``labels`` with
``labels[c, k] == c``, character ``c`` being the official character id ``c + 1`` (the ``XXXX``
of the official file names ``XXXX_YY.png``) and drawer ``k`` being ``YY - 1``. The file holds no
alphabet names, so its classes are ``"background/XXXX"``, the id zero-padded to four digits, so
that sorting the names sorts the ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .arrays import load_arrays
from .decode import decode_file_set
from .download import download_file, extract_zip_once
from .files import labelled_files
from .images import ImageSet
from .paths import require_path

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
DOWNLOADED_SUBSETS = ("images_background", "images_evaluation")
BACKGROUND_NPZ = "images_background.npz"
OMNIGLOT_LAYOUT = (
    "root/<subset>/<Alphabet>/characterNN/*.png or root/<subset>.zip, with <subset> one of "
    + ", ".join(OMNIGLOT_MD5)
    + f", or root/{BACKGROUND_NPZ}"
)


def load_omniglot(
    root: str | os.PathLike,
    size: int = 32,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_npz: bool = False,
) -> ImageSet:
    """Load every Omniglot subset found in ``root``.

    With ``use_npz`` and ``images_background.npz`` in ``root``, the background set is read from
    that file alone: the ``images_background`` folder or zip and the two "small" subsets (which
    only hold background characters, under other names) are ignored, and ``images_evaluation``
    is added when ``root`` holds it. The classes are then the evaluation set's
    ``"<Alphabet>/<characterNN>"`` followed by the background set's ``"background/XXXX"`` (see
    the module docstring), in sorted order. Otherwise every subset folder and zip is read.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the subsets (folders and/or official zip files).
    size : int, default 32
        Side of the square output images, in pixels.
    download : bool, default False
        Fetch ``images_background.zip`` and ``images_evaluation.zip`` into ``root`` (checking
        their MD5) when neither the zip nor the extracted folder is there.
    cache_dir : str or os.PathLike, optional
        Where zip files are extracted and the decoded set is cached; ``root`` (extraction only)
        when omitted.
    use_npz : bool, default False
        Read the background set from ``images_background.npz`` when ``root`` holds it. False
        by default so that configs saved before the option existed read the data they ran on;
        the benchmark's ``dataset=omniglot`` config sets it to true.

    Returns
    -------
    ImageSet
        All images, with their classes in sorted order.

    Raises
    ------
    FileNotFoundError
        When ``root`` is missing or holds no Omniglot images.
    NotADirectoryError
        When ``root`` is not a folder.
    ValueError
        When a zip file would extract outside its folder, an image cannot be decoded or, with
        ``use_npz``, ``images_background.npz`` is malformed (see
        :func:`~pml_regularizers.bench.data.load_arrays`).
    """
    root = Path(root)
    npz = root / BACKGROUND_NPZ if use_npz and (root / BACKGROUND_NPZ).is_file() else None
    subsets = ["images_evaluation"] if npz is not None else sorted(OMNIGLOT_MD5)
    if download:
        download_omniglot(root, [name for name in DOWNLOADED_SUBSETS if name in subsets])
    require_path(root, "Omniglot root", f"{OMNIGLOT_LAYOUT} (or pass download=True)", kind="folder")
    extract_to = Path(cache_dir) if cache_dir is not None else root
    paths, classes = _collect_images(_source_folders(root, extract_to, subsets))
    image_sets = [] if npz is None else [_load_background_npz(npz, size, cache_dir)]
    if paths:
        image_sets.append(decode_file_set(labelled_files(paths, classes), size, cache_dir, "omniglot"))
    if not image_sets:
        hint = f" (it holds {BACKGROUND_NPZ}: pass use_npz=True)" if (root / BACKGROUND_NPZ).is_file() else ""
        raise FileNotFoundError(f"no Omniglot images found in {root}{hint}; expected {OMNIGLOT_LAYOUT}")
    return _merge(image_sets)


def download_omniglot(root: str | os.PathLike, subsets: Sequence[str] = DOWNLOADED_SUBSETS) -> list[Path]:
    """Download the background and evaluation zips into ``root`` unless already present.

    Parameters
    ----------
    root : str or os.PathLike
        Destination folder; created if needed.
    subsets : sequence of str, default ("images_background", "images_evaluation")
        The subsets to fetch, among those two.

    Returns
    -------
    list of pathlib.Path
        The zip files that were downloaded.
    """
    root = Path(root)
    fetched = []
    for name in subsets:
        archive = root / f"{name}.zip"
        if (root / name).is_dir() or archive.is_file():
            continue
        fetched.append(download_file(OMNIGLOT_URL.format(name=name), archive, OMNIGLOT_MD5[name]))
    return fetched


def _load_background_npz(path: Path, size: int, cache_dir: str | os.PathLike | None) -> ImageSet:
    """The background set of ``images_background.npz``, its classes named ``"background/XXXX"``."""
    image_set = load_arrays(path, size, cache_dir)
    ids = [int(name) + 1 for name in image_set.class_names]
    width = max(4, len(str(ids[-1])))
    return ImageSet(image_set.images, image_set.labels, [f"background/{id_:0{width}d}" for id_ in ids])


def _merge(image_sets: list[ImageSet]) -> ImageSet:
    """The images of ``image_sets`` in their order, labelled in sorted order of their class names,
    which no two sets share; a single set is returned as it is."""
    if len(image_sets) == 1:
        return image_sets[0]
    names = sorted(name for image_set in image_sets for name in image_set.class_names)
    index = {name: label for label, name in enumerate(names)}
    labels = [torch.tensor([index[name] for name in s.class_names])[s.labels] for s in image_sets]
    return ImageSet(torch.cat([s.images for s in image_sets]), torch.cat(labels), names)


def _source_folders(root: Path, extract_to: Path, subsets: Sequence[str]) -> list[Path]:
    """Return the folders of ``subsets`` in ``root``, extracting their zip files found there."""
    folders: dict[Path, Path] = {}
    for name in subsets:
        candidates = [root / name]
        archive = root / f"{name}.zip"
        if archive.is_file():
            candidates.extend(extract_zip_once(archive, extract_to))
        for folder in candidates:
            if folder.is_dir():
                folders.setdefault(folder.resolve(), folder)
    return list(folders.values())


def _collect_images(folders: list[Path]) -> tuple[list[Path], list[str]]:
    """List ``<Alphabet>/<character>/*.png`` files, one per (class, file name)."""
    seen: set[tuple[str, str]] = set()
    paths, classes = [], []
    for folder in folders:
        for path in sorted(folder.glob("*/*/*.png")):
            class_name = f"{path.parent.parent.name}/{path.parent.name}"
            if (class_name, path.name) in seen:
                continue
            seen.add((class_name, path.name))
            paths.append(path)
            classes.append(class_name)
    return paths, classes
