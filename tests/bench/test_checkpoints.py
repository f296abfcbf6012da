"""Checkpoints: kept as a backup when replaced, read weights-only with their keys checked, and read
from the backup when the newest one cannot be used."""

import re

import pytest
import torch

from pml_regularizers.bench import UserError
from pml_regularizers.bench.results.checkpoints import backup_path, load_checkpoint, read_checkpoint, save_checkpoint


def checkpoint(epoch):
    state = {"epoch": epoch, "best_epoch": epoch, "best_score": 0.5, "done": False}
    return {"models": {"trunk": {"w": torch.full((2,), float(epoch))}}, "loss": {}, "optimizers": {}, "state": state}


def test_backup_path_sits_beside_the_checkpoint(tmp_path):
    assert backup_path(tmp_path / "checkpoint_latest.pt") == tmp_path / "checkpoint_latest.backup.pt"


def test_save_keeps_the_previous_checkpoint_only_when_asked(tmp_path):
    latest, best = tmp_path / "checkpoint_latest.pt", tmp_path / "checkpoint_best.pt"
    for epoch in (1, 2, 3):
        save_checkpoint(checkpoint(epoch), latest, keep_previous=True)
        save_checkpoint(checkpoint(epoch), best, keep_previous=False)
    assert read_checkpoint(latest)["state"]["epoch"] == 3
    assert read_checkpoint(backup_path(latest))["state"]["epoch"] == 2
    assert not backup_path(best).exists()


def test_load_falls_back_to_the_backup_and_says_why(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    assert load_checkpoint(path, lambda payload: None) is None  # neither file exists
    save_checkpoint(checkpoint(1), path, keep_previous=True)
    save_checkpoint(checkpoint(2), path, keep_previous=True)
    loaded = load_checkpoint(path, lambda payload: None)
    assert (loaded.path, loaded.problem, loaded.payload["state"]["epoch"]) == (path, None, 2)

    def refuse_epoch_2(payload):
        if payload["state"]["epoch"] == 2:
            raise UserError(f"{path} does not fit")

    loaded = load_checkpoint(path, refuse_epoch_2)
    assert (loaded.path, loaded.problem) == (backup_path(path), f"{path} does not fit")
    path.unlink()
    loaded = load_checkpoint(path, lambda payload: None)
    assert (loaded.payload["state"]["epoch"], loaded.problem) == (1, f"{path} is missing")
    backup_path(path).write_bytes(b"")  # only a damaged backup is left: its problem is the error
    with pytest.raises(UserError, match=f"{backup_path(path)} is truncated or not a PyTorch checkpoint"):
        load_checkpoint(path, lambda payload: None)


@pytest.mark.parametrize(
    "content, expected",
    [
        ([1, 2], "holds a list, not a pml-bench checkpoint"),
        (
            {"models": {}, "loss": {}, "optimizers": {}, "state": {"epoch": 1}},
            "lacks the key(s) 'best_epoch', 'best_score', 'done' in its 'state'",
        ),
        ({"models": {}, "loss": {}, "optimizers": {}, "state": 3}, "has a 'state' that is not a dict"),
    ],
)
def test_read_names_what_a_checkpoint_lacks(tmp_path, content, expected):
    path = tmp_path / "checkpoint_latest.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match="^" + re.escape(f"{path} ")) as info:
        read_checkpoint(path)
    assert expected in str(info.value)
