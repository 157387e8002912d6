"""Pack a project folder for `thrifty deploy` and unpack it on the operator, content-addressed.

The project hash is computed from the files themselves (sorted relative paths and their SHA-256), never
from the archive bytes, so the same folder always gives the same hash and an unchanged project does not
restart anything.

Every bound is checked while walking, before anything is read or uploaded: the number of files and their
total size (``Limits.project_files``/``project_bytes``). A symbolic link is never followed out of the
project folder: one that leads inside is packed as a link (relative), one that leads outside (or through
an absolute path outside) is refused with the link's name, so a project never carries /etc/passwd or a
home folder along by accident.
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

from thrifty.config.limits import ENV_VARS, Limits
from thrifty.errors import ConfigError

IGNORE_FILE = ".thriftyignore"
IGNORE_FILE_MAX_BYTES = 2**20  # patterns beyond are not read (each pattern is matched against every path)
ALWAYS_IGNORED = (".git", ".hg", ".venv", "venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache",
                  ".ruff_cache", "node_modules", ".DS_Store")  # fmt: skip


def _ignore_patterns(root: Path) -> list[str]:
    patterns = list(ALWAYS_IGNORED)
    ignore = root / IGNORE_FILE
    if ignore.is_symlink():
        link_target(root, ignore)  # refuses one leading outside the project
    if ignore.is_file():
        with open(ignore, encoding="utf-8", errors="replace") as fh:
            text = fh.read(IGNORE_FILE_MAX_BYTES)
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pat) for pat in patterns for part in parts) or any(
        fnmatch.fnmatch(rel, pat) for pat in patterns
    )


def _too_many_files(root: Path, limits: Limits) -> ConfigError:
    return ConfigError(
        f"{root}: the project folder holds more than {limits.project_files} files; the limit is "
        f"{limits.project_files} ({limits.setting('project_files')}). List what the API does not need in "
        f"{IGNORE_FILE}.",
        details={"file": str(root), "limit": limits.project_files, "setting": ENV_VARS["project_files"]},
    )


def _too_big(root: Path, total: int, limits: Limits) -> ConfigError:
    return ConfigError(
        f"{root}: the project folder holds more than {limits.project_bytes // 2**20} MiB of files "
        f"({total} bytes so far); the limit is {limits.project_bytes} bytes ({limits.setting('project_bytes')}). "
        f"Put large files (models) in a model repository, or list them in {IGNORE_FILE}.",
        details={"file": str(root), "value": total, "limit": limits.project_bytes,
                 "setting": ENV_VARS["project_bytes"]},
    )  # fmt: skip


def link_target(root: Path, link: Path) -> str:
    """The target of a link inside ``root``, relative to the link's folder; refuses one leading outside."""
    real_root = root.resolve()
    target = (link.parent.resolve() / os.readlink(link)).resolve()
    if not target.is_relative_to(real_root):
        rel = link.relative_to(root).as_posix()
        raise ConfigError(
            f"{root}: {rel} is a symbolic link to {os.readlink(link)}, outside the project folder; thrifty "
            f"never copies files from outside the project. Copy what the API needs into the folder, or list "
            f"{rel} in {IGNORE_FILE}.",
            details={"file": str(link), "value": os.readlink(link), "allowed": "links inside the project folder"},
        )
    return os.path.relpath(target, link.parent.resolve())


def project_files(root: Path, limits: Limits | None = None) -> list[str]:
    """Relative paths (POSIX) of the files (and links inside the folder) that belong to the project, sorted.

    Raises ConfigError as soon as the walk passes the file-count limit or meets a link leading outside.
    """
    limits = limits or Limits.from_env()
    patterns = _ignore_patterns(root)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into linked folders
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        kept = sorted(d for d in dirnames if not _ignored(rel_dir + d, patterns))
        dirnames[:] = [d for d in kept if not (Path(dirpath) / d).is_symlink()]
        for name in [*filenames, *(d for d in kept if d not in dirnames)]:
            rel = rel_dir + name
            full = Path(dirpath) / name
            if _ignored(rel, patterns):
                continue
            if full.is_symlink():
                link_target(root, full)
            elif not full.is_file():
                continue  # sockets, fifos, devices
            out.append(rel)
            if len(out) > limits.project_files:
                raise _too_many_files(root, limits)
    return sorted(out)


def file_digests(root: Path, files: list[str]) -> dict[str, bytes]:
    """Content digest of each file; a link's digest is that of its (relative) target."""
    out = {}
    for rel in files:
        path = root / rel
        data = b"symlink\0" + link_target(root, path).encode() if path.is_symlink() else path.read_bytes()
        out[rel] = hashlib.sha256(data).digest()
    return out


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


def pack(root: Path, limits: Limits | None = None) -> bytes:
    """tar.gz of the project's files; raises ConfigError when the project is too big (before reading it)."""
    limits = limits or Limits.from_env()
    files = project_files(root, limits)
    total = 0
    for rel in files:
        path = root / rel
        total += path.lstat().st_size if path.is_symlink() else path.stat().st_size
        if total > limits.project_bytes:
            raise _too_big(root, total, limits)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=3) as tar:
        for rel in files:
            path = root / rel
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.issym():
                info.linkname = link_target(root, path)  # relative: the operator refuses absolute links
                tar.addfile(info)
                continue
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def _check_members(tar: tarfile.TarFile, limits: Limits) -> None:
    """Refuse an archive that would expand past the project limit (a decompression bomb)."""
    total = 0
    for count, member in enumerate(tar, start=1):
        total += member.size
        if total > limits.project_bytes or count > limits.project_files:
            raise ConfigError(
                f"the uploaded project expands to more than {limits.project_bytes} bytes or "
                f"{limits.project_files} files ({limits.setting('project_bytes')}, "
                f"{limits.setting('project_files')})",
                details={"limit": limits.project_bytes, "setting": ENV_VARS["project_bytes"]},
            )


def unpack(archive: bytes, projects_dir: Path, limits: Limits | None = None) -> tuple[Path, dict[str, bytes]]:
    """Extract into ``projects_dir/<hash>`` (once); returns the folder and each file's content digest.

    The digests come from the fresh extraction, never from a folder that already existed: replicas run in
    that folder and may have written files into it (a trained model, a cache).
    """
    limits = limits or Limits.from_env()
    projects_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=projects_dir))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                _check_members(tar, limits)
                # The "data" filter refuses absolute paths, '..', links out of the tree and device files.
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the uploaded project archive is not valid: {exc}") from None
        digests = file_digests(tmp, project_files(tmp, limits))
        dest = projects_dir / combine_digests(digests)
        if dest.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(dest)
        return dest, digests
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
