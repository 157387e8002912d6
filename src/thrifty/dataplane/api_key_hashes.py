"""API keys as salted hashes: what the operator stores and the gateway checks, never the keys themselves.

A stored key is ``sha256:<salt hex>:<sha256(salt + key) hex>``. Keys are high-entropy bearer tokens, so
one salted SHA-256 is enough (a slow KDF would only cost every request); the salt keeps equal keys of two
APIs, or two platforms, from having equal hashes. The operator uses one salt per API, so the gateway
computes one digest per request whatever the number of keys. A bare 64-hex entry is an unsalted SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re

PREFIX = "sha256:"
_HASHED = re.compile(r"sha256:([0-9a-f]{32}):([0-9a-f]{64})")
_BARE = re.compile(r"[0-9a-f]{64}")


def new_salt() -> bytes:
    return os.urandom(16)


def hash_key(key: str, salt: bytes) -> str:
    digest = hashlib.sha256(salt + key.strip().encode()).hexdigest()
    return f"{PREFIX}{salt.hex()}:{digest}"


def is_key_hash(value: str) -> bool:
    return _HASHED.fullmatch(value) is not None


def salt_of(values: list[str]) -> bytes | None:
    """The salt of the first hashed entry, so a redeploy of the same keys hashes them identically."""
    for value in values:
        m = _HASHED.fullmatch(value)
        if m is not None:
            return bytes.fromhex(m.group(1))
    return None


@functools.lru_cache(maxsize=1024)
def _by_salt(hashes: tuple[str, ...]) -> tuple[tuple[bytes, tuple[str, ...]], ...]:
    groups: dict[bytes, list[str]] = {}
    for value in hashes:
        value = value.lower()
        m = _HASHED.fullmatch(value)
        if m is not None:
            groups.setdefault(bytes.fromhex(m.group(1)), []).append(m.group(2))
        elif _BARE.fullmatch(value):
            groups.setdefault(b"", []).append(value)
    return tuple((salt, tuple(digests)) for salt, digests in groups.items())


def key_matches(presented: bytes, hashes: tuple[str, ...]) -> bool:
    """Whether ``presented`` is one of the keys; compares with every hash (no early exit), in constant time."""
    ok = False
    for salt, digests in _by_salt(hashes):
        digest = hashlib.sha256(salt + presented.strip()).hexdigest()
        for accepted in digests:
            ok |= hmac.compare_digest(digest, accepted)
    return ok
