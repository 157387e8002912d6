"""An in-memory model source for tests and the cost simulator: counts calls, can be gated and broken."""

from __future__ import annotations

import os
import threading
from collections import Counter

from thrifty.models.errors import ModelNotFoundError
from thrifty.models.names import ModelKey

Files = dict[str, bytes]  # relative path -> content


class FakeModelSource:
    """Implements :class:`thrifty.models.source.ModelSource` over a dict; thread-safe.

    ``gate``: when set, :meth:`fetch` blocks until the event is set (lets a test hold a download open).
    ``broken``: keys whose fetch raises OSError, as a flaky or corrupt upstream would.
    """

    def __init__(self, gate: threading.Event | None = None) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, Files]] = {}
        self.gate = gate
        self.broken: set[ModelKey] = set()
        self.fetches: Counter[ModelKey] = Counter()
        self.listings = 0

    def put(self, name: str, version: int, files: Files) -> None:
        with self._lock:
            self._models.setdefault(name, {})[version] = dict(files)

    def remove(self, name: str, version: int | None = None) -> None:
        with self._lock:
            if version is None:
                self._models.pop(name, None)
            else:
                self._models.get(name, {}).pop(version, None)

    @property
    def total_fetches(self) -> int:
        with self._lock:
            return sum(self.fetches.values())

    def list_models(self) -> list[str]:
        with self._lock:
            self.listings += 1
            return sorted(n for n, versions in self._models.items() if versions)

    def list_versions(self, name: str) -> list[int]:
        with self._lock:
            self.listings += 1
            versions = self._models.get(name)
            if not versions:
                raise ModelNotFoundError(f"model {name!r} not found in the model source", details={"model": name})
            return sorted(versions)

    def version_bytes(self, name: str, version: int) -> int:
        return sum(len(data) for data in self._files(name, version).values())

    def fetch(self, name: str, version: int, dest_dir: str) -> int:
        key = ModelKey(name, version)
        with self._lock:
            self.fetches[key] += 1
        if self.gate is not None:
            self.gate.wait()
        files = self._files(name, version)
        written = 0
        for rel, data in files.items():
            path = os.path.join(dest_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            written += len(data)
            if key in self.broken:
                raise OSError(f"connection reset while downloading {key}")
        return written

    def _files(self, name: str, version: int) -> Files:
        with self._lock:
            files = self._models.get(name, {}).get(version)
            if files is None:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version}", details={"model": name, "version": version}
                )
            return dict(files)
