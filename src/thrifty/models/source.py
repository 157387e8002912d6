"""The seam between the model cache and wherever models live."""

from __future__ import annotations

from typing import Protocol


class ModelSource(Protocol):
    """Blocking I/O on a model repository; the cache calls every method from a worker thread.

    Layout: ``<source>/<name>/<version>/...`` with integer version folders, or ``<source>/<name>/...``
    for a model with a single version, reported as version 1.
    """

    def list_models(self) -> list[str]:
        """Names of the models in the source (invalid names are skipped), sorted."""
        ...

    def list_versions(self, name: str) -> list[int]:
        """Versions of ``name``, ascending; ``[1]`` for an unversioned model.

        Raises ModelNotFoundError when there is no such model.
        """
        ...

    def version_bytes(self, name: str, version: int) -> int:
        """Total size of the files of one version (used to make room on disk before downloading)."""
        ...

    def fetch(self, name: str, version: int, dest_dir: str) -> int:
        """Copy one version's files into the existing empty ``dest_dir``; return the bytes written.

        Raises ModelNotFoundError when the version does not exist. Must never write outside ``dest_dir``.
        """
        ...
