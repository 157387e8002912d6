"""Pack a project folder for `thrifty deploy` and unpack it on the operator, content-addressed.

The project hash is computed from the files themselves (sorted relative paths and their SHA-256), never
from the archive bytes, so the same folder always gives the same hash and an unchanged project does not
restart anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from thrifty.errors import ConfigError

MAX_PROJECT_BYTES = 256 * 2**20
MAX_PROJECT_FILES = 50_000
IGNORE_FILE = ".thriftyignore"
ALWAYS_IGNORED = (".git", ".hg", ".venv", "venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache",
                  ".ruff_cache", "node_modules", ".DS_Store")  # fmt: skip


def _ignore_patterns(root: Path) -> list[str]:
    patterns = list(ALWAYS_IGNORED)
    ignore = root / IGNORE_FILE
    if ignore.is_file():
        for line in ignore.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pat) for pat in patterns for part in parts) or any(
        fnmatch.fnmatch(rel, pat) for pat in patterns
    )


def project_files(root: Path) -> list[str]:
    """Relative paths (POSIX) of the files that belong to the project, sorted."""
    patterns = _ignore_patterns(root)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not _ignored(rel_dir + d, patterns))
        for name in filenames:
            rel = rel_dir + name
            full = Path(dirpath) / name
            if not _ignored(rel, patterns) and full.is_file() and not full.is_symlink():
                out.append(rel)
    return sorted(out)


def file_digests(root: Path, files: list[str]) -> dict[str, bytes]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).digest() for rel in files}


def combine_digests(digests: dict[str, bytes], *, exclude: str | None = None) -> str:
    """One hash over (path, content digest) pairs, in path order; ``exclude`` leaves one file out."""
    h = hashlib.sha256()
    for rel in sorted(digests):
        if rel != exclude:
            h.update(rel.encode() + b"\0")
            h.update(digests[rel])
    return h.hexdigest()


def hash_files(root: Path, files: list[str]) -> str:
    return combine_digests(file_digests(root, files))


def pack(root: Path) -> bytes:
    """tar.gz of the project's files; raises ConfigError when the project is too big."""
    files = project_files(root)
    total = sum((root / rel).stat().st_size for rel in files)
    if total > MAX_PROJECT_BYTES:
        raise ConfigError(
            f"{root}: the project folder holds {total / 2**20:.0f} MiB of files; the limit is "
            f"{MAX_PROJECT_BYTES // 2**20} MiB. Put large files (models) in a model repository, or list them "
            f"in {IGNORE_FILE}."
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=3) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def _check_members(tar: tarfile.TarFile) -> None:
    """Refuse an archive that would expand past the project limit (a decompression bomb)."""
    total = 0
    for count, member in enumerate(tar, start=1):
        total += member.size
        if total > MAX_PROJECT_BYTES or count > MAX_PROJECT_FILES:
            raise ConfigError(
                f"the uploaded project expands to more than {MAX_PROJECT_BYTES // 2**20} MiB or "
                f"{MAX_PROJECT_FILES} files"
            )


def unpack(archive: bytes, projects_dir: Path) -> tuple[Path, dict[str, bytes]]:
    """Extract into ``projects_dir/<hash>`` (once); returns the folder and each file's content digest.

    The digests come from the fresh extraction, never from a folder that already existed: replicas run in
    that folder and may have written files into it (a trained model, a cache).
    """
    projects_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=projects_dir))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                _check_members(tar)
                # The "data" filter refuses absolute paths, '..', links out of the tree and device files.
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the uploaded project archive is not valid: {exc}") from None
        digests = file_digests(tmp, project_files(tmp))
        dest = projects_dir / combine_digests(digests)
        if dest.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(dest)
        return dest, digests
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
