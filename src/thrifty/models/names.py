"""Validation of model names and versions taken from requests and from the source listing.

A name becomes a directory name in the local cache, so it must be one plain path segment: ASCII letters,
digits, ``_``, ``.`` and ``-`` only, no ``..`` anywhere, not starting with ``.`` (which also keeps names
apart from the cache's own ``.tmp-``/``.trash-`` entries), at most 128 characters. A version is a
non-negative decimal integer (ASCII digits only), or ``latest``/``None`` for the highest one.

:func:`parse_model_path` is the one reading of a request's model path, shared by the gateway (which routes
on it) and the replica (which serves it), so that both agree on which model a request asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from thrifty.models.errors import ModelNameError

MAX_NAME_CHARS = 128
MAX_VERSION_DIGITS = 18  # fits an int64; leaves room for timestamps in milliseconds

_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_VERSION = re.compile(r"[0-9]+", re.ASCII)
_CANONICAL_VERSION = re.compile(r"0|[1-9][0-9]*", re.ASCII)


@dataclass(frozen=True, slots=True, order=True)
class ModelKey:
    """One version of one model; ``str()`` gives ``name/version`` (unambiguous: names have no '/')."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ModelNameError("model name is empty", details={"model": name})
    shown = name if len(name) <= 80 else name[:80] + "..."
    if len(name) > MAX_NAME_CHARS:
        raise ModelNameError(
            f"model name {shown!r} is longer than {MAX_NAME_CHARS} characters", details={"model": shown}
        )
    if not _NAME.fullmatch(name) or ".." in name or name.startswith("."):
        raise ModelNameError(
            f"invalid model name {shown!r}: use ASCII letters, digits, '_', '.' and '-' only, "
            "without '..' and not starting with '.'",
            details={"model": shown},
        )
    return name


def parse_version(version: str | int | None) -> int | None:
    """``None`` means latest. Accepts an int, ``"latest"`` or a decimal string such as ``"3"``."""
    if version is None:
        return None
    if isinstance(version, bool):
        raise ModelNameError(f"invalid model version {version!r}", details={"version": str(version)})
    if isinstance(version, int):
        if version < 0:
            raise ModelNameError(f"invalid model version {version}: must be >= 0", details={"version": version})
        return version
    if version == "latest":
        return None
    if isinstance(version, str) and _VERSION.fullmatch(version) and len(version) <= MAX_VERSION_DIGITS:
        return int(version)
    shown = str(version)[:40]
    raise ModelNameError(
        f"invalid model version {shown!r}: use a non-negative integer or 'latest'",
        details={"version": shown},
    )


def version_from_dir_name(name: str) -> int | None:
    """The version a source folder stands for, or None when it is not a version folder.

    Only canonical decimals count ("7", not "007" or "+7"), so two folders never map to the same version.
    """
    if len(name) <= MAX_VERSION_DIGITS and _CANONICAL_VERSION.fullmatch(name):
        return int(name)
    return None


def is_valid_model_name(name: str) -> bool:
    try:
        validate_model_name(name)
    except ModelNameError:
        return False
    return True


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name/version`` (as in ``preload:`` lists) -> (name, version); raises ModelNameError."""
    name, sep, version = ref.partition("/")
    return validate_model_name(name), (parse_version(version) if sep else None)


def parse_model_path(path: bytes) -> tuple[str, int | None]:
    """``/<model>`` or ``/<model>/<version>`` (after the API prefix; a trailing ``/`` allowed) ->
    (name, version), version None for latest; raises ModelNameError.

    Each segment is percent-decoded before it is judged, so ``%2e%2e`` is the ``..`` it stands for, ``%2F``
    a ``/`` inside a name, and ``en%2Dfr`` is ``en-fr``; ``02`` is version 2 and ``latest`` no version.
    """
    parts = path[1:].split(b"/")
    if len(parts) > 1 and parts[-1] == b"":
        parts.pop()  # a trailing slash: /en-fr/ is /en-fr
    if not 1 <= len(parts) <= 2:
        raise ModelNameError(
            f"expected a model path /<model> or /<model>/<version>, got a path with {len(parts)} segments"
        )
    name = validate_model_name(_decode_segment(parts[0]))
    return name, (parse_version(_decode_segment(parts[1])) if len(parts) == 2 else None)


def _decode_segment(part: bytes) -> str:
    raw = unquote_to_bytes(part) if b"%" in part else part
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ModelNameError(
            f"invalid model name or version {raw.decode('utf-8', 'replace')[:80]!r}: ASCII only"
        ) from None
