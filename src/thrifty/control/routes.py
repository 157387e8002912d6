"""The routes step: push the routing table to the gateway when it changed (and every few seconds anyway).

Replicas about to be stopped are in the table as draining before anyone stops them: the gateway must
know first, or their stop would cut requests off. ``update`` says whether the gateway took the table.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from thrifty.control.gateway_link import Gateway

log = logging.getLogger("thrifty.operator")

ROUTES_REFRESH_S = 5.0


class RoutesStep:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.pushed: dict[str, Any] | None = None
        self._pushed_s = 0.0
        self._generation = 0

    def forget(self) -> None:
        """The gateway restarted: push the next table whatever it holds."""
        self.pushed = None

    async def update(self, now: float, table: dict[str, Any]) -> bool:
        stale = now - self._pushed_s > ROUTES_REFRESH_S
        if table == self.pushed and not stale and self._generation == self.gateway.generation:
            return True
        try:
            await self.gateway.push_routes(table)
        except (httpx.HTTPError, RuntimeError) as exc:
            log.warning("could not push routes to the gateway: %s", exc)
            return False
        self.pushed = table
        self._pushed_s = now
        self._generation = self.gateway.generation
        return True
