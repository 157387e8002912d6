"""The platform secret: the gateway's proof, to replicas, that a request came through it.

Replicas listen on loopback with no other authentication, so without it any local process could call a
replica directly and skip API keys and admission control. One random value per platform folder, created
at ``thrifty up`` in ``$THRIFTY_HOME/replica_secret`` (mode 0600, never rewritten while it exists);
processes receive the file's path, never the value in their environment, and the gateway sends the value
in one header on every request to a replica. Every engine (local subprocesses now, Ray later) uses this
module, and ``hide_environment``, which keeps what API keys are read from out of predictors' environment.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

SECRET_FILE_NAME = "replica_secret"
HEADER = b"x-thrifty-secret"
# Comma-separated names of variables a replica removes from its environment (with this one) before it
# imports predictor code: those API keys are read from (``env:NAME``) and the metrics key.
HIDE_ENV = "THRIFTY_HIDE_ENV"
METRICS_KEY_ENV = "THRIFTY_METRICS_KEY"


class SecretFileError(Exception):
    """The secret file is missing, unreadable or empty."""


def secret_path(home: Path) -> Path:
    return home / SECRET_FILE_NAME


def ensured_secret_file(home: Path) -> Path:
    """The platform folder's secret file, created if absent: what engines pass replicas (``--secret-file``)."""
    path = secret_path(home)
    ensure_secret(path)
    return path


def ensure_secret(path: Path) -> bytes:
    """The secret in ``path``, created (mode 0600) if absent; concurrent callers all get the same value."""
    with contextlib.suppress(FileNotFoundError):
        return read_secret(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_urlsafe(32).encode("ascii"))
        # link() fails if another process got there first: nobody ever sees a half-written or replaced file.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return read_secret(path)


def read_secret(path: str | Path) -> bytes:
    try:
        value = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretFileError(f"cannot read the platform secret {path}: {exc}") from None
    if not value:
        raise SecretFileError(f"the platform secret file {path} is empty")
    return value


def header_line(secret: bytes) -> bytes:
    """The header line the gateway adds to every request head it sends to a replica."""
    return HEADER + b": " + secret + b"\r\n"


def presented_matches(presented: bytes | None, secret: bytes) -> bool:
    """Constant time: how long the check takes says nothing about how much of a guess was right."""
    return presented is not None and hmac.compare_digest(presented, secret)


def hide_environment(environ: MutableMapping[str, str]) -> None:
    """Remove what the predictor must not see: the variables named in ``HIDE_ENV``, and that list."""
    for name in environ.pop(HIDE_ENV, "").split(","):
        if name.strip():
            environ.pop(name.strip(), None)
