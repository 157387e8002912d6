"""Packing a project for deploy and unpacking it content-addressed on the operator."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from thrifty.config.limits import Limits
from thrifty.errors import ConfigError
from thrifty.project_archive import combine_digests, hash_files, pack, project_files, unpack


def make_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "thrifty.yaml").write_text("apis:\n  - name: a\n")
    (root / "predictor.py").write_text("class Predictor: ...\n")
    (root / "pkg" / "helper.py").write_text("X = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    (root / ".venv").mkdir()
    (root / ".venv" / "big").write_bytes(b"x" * 100)
    (root / "data.bin").write_bytes(b"ignored by .thriftyignore")
    (root / ".thriftyignore").write_text("# comment\ndata.bin\n")
    return root


def test_ignores_caches_venvs_and_ignore_file(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert project_files(root) == [".thriftyignore", "pkg/helper.py", "predictor.py", "thrifty.yaml"]


def test_round_trip_is_content_addressed(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    folder, digests = unpack(pack(root), tmp_path / "projects")
    assert folder.name == hash_files(root, project_files(root)) == combine_digests(digests)
    assert (folder / "pkg" / "helper.py").read_text() == "X = 1\n"
    # A replica writes into its folder (e.g. a trained model): the same upload still hashes the same.
    (folder / "model.joblib").write_bytes(b"trained")
    folder2, digests2 = unpack(pack(root), tmp_path / "projects")
    assert (folder2, digests2) == (folder, digests)
    assert sorted(p.name for p in (tmp_path / "projects").iterdir()) == [folder.name]
    assert combine_digests(digests, exclude="thrifty.yaml") != combine_digests(digests)
    (root / "predictor.py").write_text("class Predictor: pass\n")
    assert unpack(pack(root), tmp_path / "projects")[0] != folder


def test_rejects_decompression_bomb(tmp_path: Path) -> None:
    packed = pack(make_project(tmp_path / "p"))
    with pytest.raises(ConfigError, match="expands to more than"):
        unpack(packed, tmp_path / "projects", Limits(project_bytes=10))
    assert list((tmp_path / "projects").iterdir()) == []


def test_rejects_path_traversal(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"evil"
        info = tarfile.TarInfo("../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ConfigError, match="not valid"):
        unpack(buf.getvalue(), tmp_path / "projects")
    assert not (tmp_path / "escape.txt").exists()
    assert [p for p in (tmp_path / "projects").iterdir()] == []


def test_rejects_garbage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        unpack(b"not a tarball", tmp_path / "projects")
