"""An in-memory stand-in for the gateway process, for tests and the cost simulator."""

from __future__ import annotations

from typing import Any

from thrifty.engines.identity import ProcessIdentity


class FakeGateway:
    def __init__(self) -> None:
        self.generation = 1
        self.tables: list[dict[str, Any]] = []
        self.next_stats: dict[str, Any] = {"apis": {}}

    @property
    def url(self) -> str:
        return "http://127.0.0.1:8888"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def identity(self) -> ProcessIdentity | None:
        return None

    def alive(self) -> bool:
        return True

    async def start(self, timeout_s: float = 20.0) -> None:
        self.generation += 1

    async def push_routes(self, table: dict[str, Any]) -> None:
        self.tables.append(table)

    async def stats(self) -> dict[str, Any]:
        return self.next_stats

    async def stop(self, grace_s: float) -> None:
        pass
