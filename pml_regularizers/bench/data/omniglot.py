"""Omniglot (Lake et al., 2015) from its official folders or zip files.

Accepted inside ``root``: the folders ``images_background``, ``images_evaluation``,
``images_background_small1`` and ``images_background_small2``, each laid out as
``<Alphabet>/characterNN/*.png``, and the official zip files of the same names. Zip files are
extracted (safely) into ``cache_dir``, or into ``root`` when no ``cache_dir`` is given.

A class is ``"<Alphabet>/<characterNN>"``. A class found in several sources (the two "small"
subsets both hold Greek and Latin) is merged, keeping one copy of each image file name. Images
are 1-bit PNGs with a white background and black strokes; they decode to ``uint8`` 255/0 before
resizing.
"""

from __future__ import annotations

import os
from pathlib import Path

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
OMNIGLOT_LAYOUT = "root/<subset>/<Alphabet>/characterNN/*.png or root/<subset>.zip, with <subset> one of " + ", ".join(
    OMNIGLOT_MD5
)


def load_omniglot(
    root: str | os.PathLike,
    size: int = 32,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ImageSet:
    """Load every Omniglot subset found in ``root``.

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

    Returns
    -------
    ImageSet
        All images, with classes ``"<Alphabet>/<characterNN>"`` in sorted order.

    Raises
    ------
    FileNotFoundError
        When ``root`` is missing or holds no Omniglot images.
    NotADirectoryError
        When ``root`` is not a folder.
    """
    root = Path(root)
    if download:
        download_omniglot(root)
    require_path(root, "Omniglot root", f"{OMNIGLOT_LAYOUT} (or pass download=True)", kind="folder")
    extract_to = Path(cache_dir) if cache_dir is not None else root
    paths, classes = _collect_images(_source_folders(root, extract_to))
    if not paths:
        raise FileNotFoundError(f"no Omniglot images found in {root}; expected {OMNIGLOT_LAYOUT}")
    return decode_file_set(labelled_files(paths, classes), size, cache_dir, "omniglot")


def download_omniglot(root: str | os.PathLike) -> list[Path]:
    """Download the background and evaluation zips into ``root`` unless already present.

    Parameters
    ----------
    root : str or os.PathLike
        Destination folder; created if needed.

    Returns
    -------
    list of pathlib.Path
        The zip files that were downloaded.
    """
    root = Path(root)
    fetched = []
    for name in DOWNLOADED_SUBSETS:
        archive = root / f"{name}.zip"
        if (root / name).is_dir() or archive.is_file():
            continue
        fetched.append(download_file(OMNIGLOT_URL.format(name=name), archive, OMNIGLOT_MD5[name]))
    return fetched


def _source_folders(root: Path, extract_to: Path) -> list[Path]:
    """Return the subset folders of ``root``, extracting the subset zip files found there."""
    folders: dict[Path, Path] = {}
    for name in sorted(OMNIGLOT_MD5):
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
