"""Checks on the names a config gives its entries (APIs, splitters, node pools)."""

from __future__ import annotations

from collections.abc import Iterable


def reject_duplicates(names: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` (located by pydantic) at the first name listed twice; ``what``: e.g. "API name"."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} appears more than once")
        seen.add(name)
