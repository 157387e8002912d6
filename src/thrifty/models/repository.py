"""A model repository on any fsspec filesystem: a local folder, ``file://``, ``s3://``, ``http(s)://``.

``http(s)://`` sources are listed through the HTML directory index the server returns for a folder URL
(what ``python -m http.server``, nginx ``autoindex`` and Apache ``Indexes`` produce); a folder served with
an ``index.html`` of its own cannot be listed. Every call lists afresh: fsspec's listing caches would
otherwise hide a newly uploaded version from :meth:`ModelRepository.list_versions`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

import fsspec
from fsspec.spec import AbstractFileSystem

from thrifty.errors import ConfigError
from thrifty.models.errors import ModelLoadError, ModelNotFoundError
from thrifty.models.names import is_valid_model_name, validate_model_name, version_from_dir_name


class ModelRepository:
    """Lists models and versions in a source and copies one version into a local folder (blocking I/O)."""

    def __init__(self, source: str, storage_options: dict[str, Any] | None = None) -> None:
        if not source:
            raise ConfigError("models.source is empty")
        self.source = source
        try:
            # Our own instance (not fsspec's shared one), so clearing its listing cache affects no one else.
            fs, root = fsspec.core.url_to_fs(source, skip_instance_cache=True, **(storage_options or {}))
        except ImportError as exc:
            raise ConfigError(
                f"models.source {source!r} needs a package that is not installed: {exc} "
                "(s3:// and http(s):// sources: pip install 'thrifty[s3]')",
                details={"source": source},
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"models.source {source!r}: {exc}", details={"source": source}) from exc
        self._fs: AbstractFileSystem = fs
        self._http = source.startswith(("http://", "https://"))
        self._root = root.rstrip("/") if root.rstrip("/") else root

    def __repr__(self) -> str:
        return f"ModelRepository({self.source!r})"

    def list_models(self) -> list[str]:
        try:
            entries = self._ls(self._path())
        except FileNotFoundError as exc:
            raise ModelNotFoundError(
                f"model source {self.source!r} does not exist", details={"source": self.source}
            ) from exc
        names = {self._base(e["name"]) for e in entries if e.get("type") == "directory"}
        return sorted(n for n in names if is_valid_model_name(n))

    def list_versions(self, name: str) -> list[int]:
        versioned, versions = self._layout(validate_model_name(name))
        return versions if versioned else [1]

    def version_bytes(self, name: str, version: int) -> int:
        return sum(size for _, _, size in self._files(name, version))

    def fetch(self, name: str, version: int, dest_dir: str) -> int:
        dest_root = os.path.realpath(dest_dir)
        sources: list[str] = []
        targets: list[str] = []
        for remote, rel_parts, _ in self._files(name, version):
            target = os.path.realpath(os.path.join(dest_root, *rel_parts))
            if not target.startswith(dest_root + os.sep):
                raise ModelLoadError(
                    f"model {name!r} version {version}: file {remote!r} would be written outside the cache",
                    details={"model": name, "version": version},
                )
            os.makedirs(os.path.dirname(target), exist_ok=True)
            sources.append(remote)
            targets.append(target)
        if sources:
            self._fs.get(sources, targets)
        return sum(os.path.getsize(t) for t in targets)

    # -- internals -------------------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        path = "/".join([self._root, *parts])
        return path + "/" if self._http else path  # an HTTP folder is listed through its URL with '/'

    def _base(self, listed_name: str) -> str:
        base = listed_name.rstrip("/").rsplit("/", 1)[-1]
        return unquote(base) if self._http else base

    def _ls(self, path: str) -> list[dict[str, Any]]:
        self._fs.invalidate_cache()
        return list(self._fs.ls(path, detail=True))

    def _layout(self, name: str) -> tuple[bool, list[int]]:
        """(has version folders, their versions); raises ModelNotFoundError for a missing or empty model."""
        path = self._path(name)
        try:
            entries = self._ls(path)
        except FileNotFoundError as exc:
            raise _not_found(name) from exc
        if not entries or _is_the_file_itself(entries, path):
            raise _not_found(name)
        versions: set[int] = set()
        for entry in entries:
            if entry.get("type") == "directory":
                version = version_from_dir_name(self._base(entry["name"]))
                if version is not None:
                    versions.add(version)
        return bool(versions), sorted(versions)

    def _files(self, name: str, version: int) -> list[tuple[str, list[str], int]]:
        """(remote path, safe relative parts, size) of every file of one version."""
        versioned, versions = self._layout(validate_model_name(name))
        if versioned and version in versions:
            prefix = self._path(name, str(version))
        elif not versioned and version == 1:
            prefix = self._path(name)
        else:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} (versions: {versions if versioned else [1]})",
                details={"model": name, "version": version},
            )
        base = prefix.rstrip("/") + "/"
        found: dict[str, dict[str, Any]] = self._fs.find(prefix, detail=True)
        files: list[tuple[str, list[str], int]] = []
        for remote, info in sorted(found.items()):
            if info.get("type") == "directory" or remote.endswith("/") or not remote.startswith(base):
                continue  # S3 "folder marker" objects, or anything the listing put elsewhere
            if self._http and ("?" in remote[len(base) :] or "#" in remote[len(base) :]):
                continue  # a listing page's own links (Apache's sort links "?C=N;O=D"), not files
            rel_parts = [self._safe_part(name, remote, p) for p in remote[len(base) :].split("/")]
            size = info.get("size")
            if size is None:  # HTTP listings carry no sizes
                size = self._fs.size(remote)
            files.append((remote, rel_parts, int(size or 0)))
        if not files:
            raise ModelNotFoundError(
                f"model {name!r} version {version} has no files",
                details={"model": name, "version": version},
            )
        return files

    def _safe_part(self, name: str, remote: str, part: str) -> str:
        part = unquote(part) if self._http else part
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise ModelLoadError(
                f"model {name!r}: refusing to download {remote!r} (unsafe path)", details={"model": name}
            )
        return part


def _is_the_file_itself(entries: list[dict[str, Any]], path: str) -> bool:
    """Listing a plain file (not a folder) returns that file: a file named like a model is no model."""
    only = entries[0]
    return len(entries) == 1 and only.get("type") != "directory" and only["name"].rstrip("/") == path.rstrip("/")


def _not_found(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {name!r} not found in the model source", details={"model": name})
