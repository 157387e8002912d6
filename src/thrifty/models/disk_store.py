"""The on-disk layout of the model cache: ``<cache_dir>/<name>/<version>/`` plus hidden work folders.

Crash safety: a version is downloaded into ``<cache_dir>/.tmp-*`` and renamed into place only when complete
(a rename within one filesystem is atomic), and removed by renaming it to ``<cache_dir>/.trash-*`` before
deleting the files. So a ``<name>/<version>`` folder is always a whole model; whatever a crash leaves in
``.tmp-*``/``.trash-*`` is deleted by :meth:`DiskStore.prepare`. (Durability across a power cut is not a
goal: the cache is a cache, files are not fsync'ed.)

Every path is resolved and checked to lie inside the cache folder before anything is read or written.
All methods block: the cache calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

from thrifty.models.errors import ModelLoadError
from thrifty.models.names import ModelKey, is_valid_model_name, validate_model_name, version_from_dir_name

TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True, slots=True)
class StoredVersion:
    key: ModelKey
    size_bytes: int
    mtime_s: float  # wall-clock modification time, only used to order adopted versions


class DiskStore:
    def __init__(self, cache_dir: str) -> None:
        self._given = cache_dir
        self._root = os.path.realpath(cache_dir)

    @property
    def root(self) -> str:
        return self._root

    def prepare(self) -> list[StoredVersion]:
        """Create the folder, delete leftovers of interrupted downloads and removals, list complete versions."""
        os.makedirs(self._given, exist_ok=True)
        self._root = os.path.realpath(self._given)
        stored: list[StoredVersion] = []
        for entry in os.scandir(self._root):
            if entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                self._delete_tree(entry.path)
            elif entry.is_dir(follow_symlinks=False) and is_valid_model_name(entry.name):
                for sub in os.scandir(entry.path):
                    version = version_from_dir_name(sub.name)
                    if version is not None and sub.is_dir(follow_symlinks=False):
                        key = ModelKey(entry.name, version)
                        stored.append(StoredVersion(key, tree_bytes(sub.path), sub.stat().st_mtime))
                self._remove_if_empty(entry.path)
        stored.sort(key=lambda s: s.mtime_s)
        return stored

    def version_dir(self, key: ModelKey) -> str:
        path = os.path.join(self._root, validate_model_name(key.name), str(int(key.version)))
        return self._inside(path)

    def new_temp_dir(self, key: ModelKey) -> str:
        prefix = f"{TEMP_PREFIX}{validate_model_name(key.name)}-{int(key.version)}-"
        return self._inside(tempfile.mkdtemp(prefix=prefix, dir=self._root))

    def commit(self, temp_dir: str, key: ModelKey) -> str:
        """Move a complete download into place atomically; returns the final folder."""
        temp_dir = self._inside(temp_dir)
        final = self.version_dir(key)
        if os.path.lexists(final):
            self.remove(key)  # a copy left behind by an earlier run that the cache has not adopted
        for attempt in range(3):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self._inside(os.path.dirname(final))  # the name folder may not be a link to elsewhere
            try:
                os.rename(temp_dir, final)
                return final
            except FileNotFoundError:
                # remove() of another version tidied the (then empty) name folder away in between.
                if attempt == 2 or not os.path.isdir(temp_dir):
                    raise
        return final  # not reached

    def discard(self, temp_dir: str) -> None:
        path = self._inside(temp_dir)
        if os.path.basename(path).startswith(TEMP_PREFIX):
            self._delete_tree(path)

    def remove(self, key: ModelKey) -> None:
        path = self.version_dir(key)
        if not os.path.lexists(path):
            return
        trash = os.path.join(self._root, f"{TRASH_PREFIX}{uuid.uuid4().hex}")
        os.rename(path, trash)
        self._delete_tree(trash)
        self._remove_if_empty(os.path.dirname(path))

    def _remove_if_empty(self, name_dir: str) -> None:
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(self._inside(name_dir))

    def _inside(self, path: str) -> str:
        resolved = os.path.realpath(path)
        if not resolved.startswith(self._root + os.sep):
            raise ModelLoadError(
                f"refusing to touch {path!r}: it resolves outside the model cache folder {self._root!r}"
            )
        return resolved

    def _delete_tree(self, path: str) -> None:
        # Check where the entry itself lies, not its target: unlinking a link never touches what it points to.
        parent = os.path.realpath(os.path.dirname(path))
        if parent != self._root:
            self._inside(parent)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=True)


def tree_bytes(path: str) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total
