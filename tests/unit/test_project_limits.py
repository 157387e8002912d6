"""A project folder is bounded before anything is read or uploaded, and no link is followed out of it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from thrifty.config.limits import Limits
from thrifty.errors import ConfigError
from thrifty.project_archive import pack, project_files, unpack


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "thrifty.yaml").write_text("apis:\n  - name: a\n")
    (root / "predictor.py").write_text("class Predictor: ...\n")
    return root


def test_link_to_a_file_outside_is_refused(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    os.symlink("/etc/passwd", root / "passwd")
    with pytest.raises(ConfigError, match=r"passwd is a symbolic link to /etc/passwd, outside the project") as err:
        pack(root)
    assert err.value.exit_code == 2 and ".thriftyignore" in err.value.message


def test_link_to_a_folder_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "key").write_text("do not upload")
    root = make_project(tmp_path / "p")
    (root / "sub").mkdir()
    os.symlink("../../secrets", root / "sub" / "data")
    with pytest.raises(ConfigError, match=r"sub/data is a symbolic link to \.\./\.\./secrets"):
        pack(root)
    (root / ".thriftyignore").write_text("sub/data\n")  # an explicit way out
    with tarfile.open(fileobj=io.BytesIO(pack(root)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [".thriftyignore", "predictor.py", "thrifty.yaml"]


def test_ignore_file_linked_outside_is_refused(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    os.symlink("/etc/passwd", root / ".thriftyignore")
    with pytest.raises(ConfigError, match="outside the project"):
        project_files(root)


def test_links_inside_travel_as_links(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / "weights").mkdir()
    (root / "weights" / "v1.bin").write_bytes(b"w1")
    os.symlink(root / "weights" / "v1.bin", root / "model.bin")  # absolute, but inside
    os.symlink("weights", root / "current")
    folder, digests = unpack(pack(root), tmp_path / "projects")
    assert os.readlink(folder / "model.bin") == "weights/v1.bin"
    assert (folder / "model.bin").read_bytes() == b"w1"
    assert (folder / "current" / "v1.bin").read_bytes() == b"w1"
    assert set(digests) == {"current", "model.bin", "predictor.py", "thrifty.yaml", "weights/v1.bin"}
    # Pointing a link elsewhere is a new project (a new revision).
    (root / "weights" / "v2.bin").write_bytes(b"w2")
    (root / "model.bin").unlink()
    os.symlink("weights/v2.bin", root / "model.bin")
    assert unpack(pack(root), tmp_path / "projects")[0] != folder


def test_uploaded_link_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ConfigError, match="not valid"):
        unpack(buf.getvalue(), tmp_path / "projects")
    assert list((tmp_path / "projects").iterdir()) == []


def test_too_many_files_is_refused_before_reading_them(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    for i in range(10):
        (root / f"f{i}.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"more than 5 files; the limit is 5 \(THRIFTY_MAX_PROJECT_FILES=5\)"):
        pack(root, Limits(project_files=5))
    pack(root, Limits(project_files=12))


def test_too_big_a_folder_is_refused_before_upload(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    with open(root / "data.bin", "wb") as fh:
        fh.truncate(3 * 2**20)  # sparse: costs no disk
    with pytest.raises(ConfigError, match=r"THRIFTY_MAX_PROJECT_BYTES=2097152") as err:
        pack(root, Limits(project_bytes=2 * 2**20))
    assert "model repository" in err.value.message
