"""A replica's private model-cache folder: locked while alive, removed on close, swept when its owner died."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from thrifty.dataplane.replica_cache_dir import LOCK_SUFFIX, CacheDir


def leftover(parent: Path, name: str) -> Path:
    folder = parent / name
    (folder / "en-fr" / "1").mkdir(parents=True)
    (folder / "en-fr" / "1" / "weights.npy").write_bytes(b"x" * 10)
    (parent / (name + LOCK_SUFFIX)).touch()
    return folder


def test_folders_of_dead_replicas_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    parent = tmp_path / "cache" / "translator"
    dead = leftover(parent, "translator-abc-111111")
    alive = leftover(parent, "translator-abc-222222")
    unrelated = parent / "not-a-cache"
    unrelated.mkdir()
    (parent / "x.lock").touch()
    fd = os.open(str(alive) + LOCK_SUFFIX, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live replica
    try:
        mine = CacheDir.open(str(parent / "translator-abc-333333"))
        assert Path(mine.path).is_dir()
        assert not dead.exists() and not Path(str(dead) + LOCK_SUFFIX).exists()
        assert (alive / "en-fr" / "1" / "weights.npy").is_file()
        assert unrelated.is_dir() and (parent / "x.lock").exists()
        with pytest.raises(OSError):  # a second owner of the same folder is refused
            CacheDir.open(mine.path)
        mine.remove()
        assert not Path(mine.path).exists() and not Path(mine.path + LOCK_SUFFIX).exists()
    finally:
        os.close(fd)
    # once its owner is gone, the next replica sweeps it
    other = CacheDir.open(str(parent / "translator-abc-444444"))
    assert not alive.exists()
    other.remove()
    assert sorted(p.name for p in parent.iterdir()) == ["not-a-cache", "x.lock"]


def test_without_a_folder_a_temporary_one(tmp_path: Path) -> None:
    folder = CacheDir.open(None)
    assert Path(folder.path).is_dir()
    folder.remove()
    assert not Path(folder.path).exists()
