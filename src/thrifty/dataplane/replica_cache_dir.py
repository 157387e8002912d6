"""A replica's private model-cache folder, and the removal of folders that dead replicas left behind.

The disk cache is not shared between replicas: two processes would evict each other's files. The engine
passes each replica its own folder (``<home>/cache/<api>/<replica-id>``); the replica removes it when it
stops. A replica that crashed cannot, so each replica holds an exclusive ``flock`` on
``<folder>.thrifty-cache-lock`` while it lives (the kernel releases it when the process dies, however it
dies), and a starting replica removes every sibling folder whose lock it can take: its owner is gone.
Only folders with such a lock file next to them are ever touched.

Without a folder from the engine (tests, ``replica_main`` run by hand) the replica uses a temporary one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

LOCK_SUFFIX = ".thrifty-cache-lock"

_log = logging.getLogger("thrifty.replica")


class CacheDir:
    def __init__(self, path: str, lock_fd: int | None) -> None:
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, path: str | None) -> CacheDir:
        """Lock and create ``path`` (first removing dead siblings), or make a temporary folder when None."""
        if path is None:
            return cls(tempfile.mkdtemp(prefix="thrifty-models-"), None)
        folder = Path(path).resolve()
        folder.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(folder) + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        remove_dead_siblings(folder)
        folder.mkdir(exist_ok=True)
        return cls(str(folder), fd)

    def remove(self) -> None:
        """Delete the folder (and release and delete the lock). Blocking: call from a worker thread."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path + LOCK_SUFFIX)
            os.close(self._lock_fd)
            self._lock_fd = None


def remove_dead_siblings(folder: Path) -> list[str]:
    """Remove the cache folders next to ``folder`` whose owner no longer holds their lock; returns them."""
    removed: list[str] = []
    for lock in folder.parent.glob("*" + LOCK_SUFFIX):
        other = Path(str(lock)[: -len(LOCK_SUFFIX)])
        if other == folder:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by another replica
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # alive
        try:
            shutil.rmtree(other, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(lock)
            removed.append(str(other))
        finally:
            os.close(fd)
    if removed:
        _log.info("removed %d model cache folder(s) of replicas that are gone", len(removed))
    return removed
