"""Atomic writes: a failed write leaves the old file and no temporary behind; a good one replaces it."""

import json

import pytest
import torch

from pml_regularizers.bench.results.io import atomic_torch_save, atomic_write, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"old")

    def half_then_fail(stream):
        stream.write(b"half a new file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_writes_replace_the_file_and_create_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "state.json"
    assert write_json(path, {"epoch": 3}) == path
    assert json.loads(path.read_text()) == {"epoch": 3}
    write_json(path, {"epoch": 4})
    assert json.loads(path.read_text()) == {"epoch": 4}
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "ckpt.pt")
    assert torch.equal(torch.load(tmp_path / "ckpt.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_backup_keeps_the_replaced_file_only_once_the_new_one_is_complete(tmp_path):
    path, backup = tmp_path / "ckpt.pt", tmp_path / "ckpt.backup.pt"
    atomic_write(path, lambda f: f.write(b"first"), backup=backup)
    assert path.read_bytes() == b"first" and not backup.exists()  # nothing to keep yet
    atomic_write(path, lambda f: f.write(b"second"), backup=backup)
    assert (path.read_bytes(), backup.read_bytes()) == (b"second", b"first")

    def fail(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail, backup=backup)
    assert (path.read_bytes(), backup.read_bytes()) == (b"second", b"first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.backup.pt", "ckpt.pt"]
