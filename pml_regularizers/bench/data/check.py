"""``pml-bench check-data``: decode every image of a data set once, with DataLoader workers, and
list every problem file, before a long run meets one of them.

A run decodes the natural-image data sets (cub, cars196, sop, folder) as it trains, so a file that
cannot be decoded stops it when the file is first served, and damaged image data is only warned
about then. This check reads the data set as a run with the same overrides reads it: the listing
(which refuses malformed annotation files and classes without images, and accounts for every file
it skips), then every listed file decoded. It reports each file that a listing skipped, that
cannot be decoded, or whose data the decoder reports as damaged. Data sets held in memory (glyphs,
omniglot, arrays, features) are loaded, which checks them as a run would.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import DataWarning, ImageDecodeError, UserError
from ..spec.run_spec import DataSpec
from . import FileSet
from .decode import read_image
from .loader import auto_num_workers
from .problems import DAMAGED_DATA
from .registry import NATURAL_DATASETS
from .serve import load_data

__all__ = ["DataCheck", "Problem", "check_data"]

BATCH = 32  # files a worker decodes per batch


@dataclass(frozen=True)
class Problem:
    """One problem file.

    Attributes
    ----------
    file : str
        The file's path.
    kind : str
        ``"undecodable"`` (it cannot be decoded: a run stops on it), ``"damaged"`` (the decoder
        reports damaged data: a run trains on it with a warning) or ``"skipped"`` (the listing
        passes over it; ``detail`` says why).
    detail : str
        What is wrong.
    """

    file: str
    kind: str
    detail: str


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` found.

    Attributes
    ----------
    dataset : str
        The data set's config choice.
    root : str or None
        Where it lies.
    num_images, num_classes : int
        What the data set holds (the files listed, for a file data set).
    decoded : bool
        Whether every file was decoded (a file data set), rather than the set loaded.
    seconds : float
        How long the check took.
    problems : list of Problem
        Every problem file, in the order found.
    """

    dataset: str
    root: str | None
    num_images: int
    num_classes: int
    decoded: bool
    seconds: float
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict:
        """The check as JSON-ready data."""
        return asdict(self)


class _Decoder(torch.utils.data.Dataset):
    """Decode file ``i`` of ``paths``; give ``(i, kind, detail)``, ``kind`` empty when it is fine.

    Warnings are caught per item, in the process that decodes it (a DataLoader worker is one
    thread, so this does not race).
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, str, str]:
        path = self.paths[index]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            try:
                read_image(path, "RGB")
            except ImageDecodeError as err:
                return index, "undecodable", err.summary.removeprefix(f"cannot decode image {path}: ")
        damage = [reason for w in caught if isinstance(w.message, DataWarning) for reason, _ in w.message.files]
        return index, ("damaged" if damage else ""), "; ".join(damage)


def check_data(data_spec: DataSpec, workers: int | None = None) -> DataCheck:
    """Check the data set ``data_spec`` names, as described in the module's text.

    Parameters
    ----------
    data_spec : DataSpec
        The ``dataset`` part of a run's spec.
    workers : int, optional
        DataLoader workers that decode; by default the CPUs this process may use, at most 8.

    Returns
    -------
    DataCheck
        The problems found; a data set that cannot be listed or loaded at all raises instead.

    Raises
    ------
    UserError
        When the data set cannot be listed or loaded (its root, an annotation file, a class
        without images), naming the file; or for a negative ``workers``.
    """
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    start = time.perf_counter()
    if data_spec.name in NATURAL_DATASETS:  # list the files, whatever pipeline would serve them
        data_spec = dataclasses.replace(data_spec, pipeline="natural")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        data = load_data(data_spec)
    problems = [
        Problem(str(path), "damaged" if reason.startswith(DAMAGED_DATA) else "skipped", reason)
        for w in caught
        if isinstance(w.message, DataWarning)
        for reason, path in w.message.files
    ]
    for w in caught:  # what the loader warned about and does not list file by file
        if not (isinstance(w.message, DataWarning) and w.message.files):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    decoded = isinstance(data, FileSet)
    if decoded:
        assert isinstance(data, FileSet)
        problems += _decode_all(data.paths, auto_num_workers() if workers is None else workers)
    return DataCheck(
        dataset=data_spec.choice,
        root=data_spec.root,
        num_images=len(data.labels),
        num_classes=data.num_classes,
        decoded=decoded,
        seconds=time.perf_counter() - start,
        problems=problems,
    )


def _decode_all(paths: list[Path], workers: int) -> list[Problem]:
    loader = torch.utils.data.DataLoader(
        _Decoder(paths), batch_size=BATCH, num_workers=workers, collate_fn=list, shuffle=False
    )
    problems = []
    for batch in loader:
        problems += [Problem(str(paths[index]), kind, detail) for index, kind, detail in batch if kind]
    return problems
