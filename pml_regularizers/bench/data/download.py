"""Download files with an MD5 check and extract zip archives without path traversal."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from ..results.io import atomic_write


def file_md5(path: str | os.PathLike) -> str:
    """Return the hexadecimal MD5 digest of a file's content."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, md5: str) -> Path:
    """Fetch ``url`` into ``dest`` and check its MD5 digest.

    A ``dest`` that already exists with the expected digest is kept as is. The download goes to a
    temporary file beside ``dest`` and is moved into place only once its digest matches.

    Parameters
    ----------
    url : str
        Any URL that :func:`urllib.request.urlopen` reads (``https://``, ``file://``).
    dest : str or os.PathLike
        Destination file; its folder is created if needed.
    md5 : str
        Expected hexadecimal MD5 digest of the file.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ValueError
        When the downloaded file's digest differs from ``md5``; neither the download nor a stale
        ``dest`` is left behind.
    """
    dest = Path(dest)
    expected = md5.lower()
    if dest.is_file():
        if file_md5(dest) == expected:
            return dest
        dest.unlink()

    def fetch_and_check(out: BinaryIO) -> None:
        digest = hashlib.md5()
        with urllib.request.urlopen(url) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise ValueError(
                f"MD5 mismatch for {url}: expected {expected}, got {digest.hexdigest()}; the download was deleted"
            )

    atomic_write(dest, fetch_and_check, suffix=".part")
    return dest


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{zip_path} is not a valid zip archive: {error}") from error


def _checked_members(archive: zipfile.ZipFile, base: Path, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The members of ``archive``, once each is known to stay inside the folder ``base``."""
    members = archive.infolist()
    for member in members:
        _check_member(member, base, zip_path)
    return members


def _top_entries(members: list[zipfile.ZipInfo], dest: Path) -> list[Path]:
    """The entries of ``dest`` that extracting ``members`` there makes at its top level, sorted."""
    return sorted({dest / Path(member.filename).parts[0] for member in members})


def _check_member(member: zipfile.ZipInfo, base: Path, zip_path: Path) -> None:
    if stat.S_ISLNK(member.external_attr >> 16):
        raise ValueError(f"refusing to extract {zip_path}: member {member.filename!r} is a symlink")
    target = (base / member.filename).resolve()
    if target != base and base not in target.parents:
        raise ValueError(
            f"refusing to extract {zip_path}: member {member.filename!r} would be written "
            f"outside the target folder {base}"
        )


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a zip archive into ``dest`` after checking that every member stays inside it.

    All members are checked before anything is written, so a rejected archive writes nothing.

    Parameters
    ----------
    zip_path : str or os.PathLike
        The archive.
    dest : str or os.PathLike
        Target folder; created if needed.

    Returns
    -------
    list of pathlib.Path
        The extracted top-level entries of ``dest``, sorted.

    Raises
    ------
    ValueError
        When a member is a symlink or its path (absolute, or with ``..``) resolves outside
        ``dest``, or when the file is not a zip archive.
    """
    zip_path = Path(zip_path)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    with _open_zip(zip_path) as archive:
        members = _checked_members(archive, base, zip_path)
        for member in members:
            archive.extract(member, base)
    return _top_entries(members, dest)


def extract_zip_once(zip_path: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract ``zip_path`` into ``dest`` unless its top-level entries are already there.

    The archive is first extracted (with :func:`safe_extract_zip`) into a temporary folder inside
    ``dest``, and each top-level entry is then moved into place, so an interrupted extraction is
    never mistaken for a complete one.

    Parameters
    ----------
    zip_path, dest : str or os.PathLike
        As for :func:`safe_extract_zip`.

    Returns
    -------
    list of pathlib.Path
        The top-level entries of the archive inside ``dest``, sorted.
    """
    dest = Path(dest)
    with _open_zip(Path(zip_path)) as archive:
        members = _checked_members(archive, dest.resolve(), Path(zip_path))
    tops = _top_entries(members, dest)
    if all(top.exists() for top in tops):
        return tops
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        safe_extract_zip(zip_path, staging)
        for top in tops:
            if not top.exists():
                os.replace(staging / top.name, top)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tops
