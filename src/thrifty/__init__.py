"""thrifty: serve ML models as HTTP APIs at the lowest cost that meets their latency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it from here (dynamic = ["version"]), and the
# CLI (--version) and the admin API (/v1/status) import it.
__version__ = "0.1.0"

if TYPE_CHECKING:
    from thrifty.client import Client


def __getattr__(name: str) -> Any:
    # Lazy, so that replica processes (which import thrifty.dataplane) do not pay for the client's imports.
    if name == "Client":
        from thrifty.client import Client

        return Client
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
