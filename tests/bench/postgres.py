"""A real PostgreSQL server for the search tests: Debian's ``postgresql`` binaries (``initdb``,
``pg_ctl``), a fresh cluster in a temporary folder, reached over a Unix socket. ``.ci/run`` installs
the package where it is missing; elsewhere the tests that need it skip, saying so."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_REASON = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, or Debian's newest version folder."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # the real folder, with createdb beside initdb
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(folders[-1]).parent if folders else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """Start a server with one database; yield its SQLAlchemy URL; stop it and remove its files.

    The server runs as the ``postgres`` user when this process is root (``initdb`` refuses root),
    with trust authentication on a socket in the cluster's folder, and no TCP port open.
    """
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(SKIP_REASON)
    folder = Path(tempfile.mkdtemp(prefix="pml-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    as_server: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
        os.chmod(folder, 0o755)
        as_server = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_server, *command], check=True, capture_output=True, text=True)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        options = f"-p {port} -k {sockets} -c listen_addresses=''"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start")
        try:
            run(str(binaries / "createdb"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "optuna")
            yield f"postgresql+psycopg2://postgres@/optuna?host={sockets}&port={port}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
