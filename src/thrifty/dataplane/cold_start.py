"""Holding requests for an API scaled to zero until its first replica is ready (the activator).

The gateway counts a held request as in flight, so the operator's autoscaler sees the demand within a
second and wakes a replica; when the routing table next lists a ready replica, every held request of that
API is released and forwarded. The client sees latency, not an error. The hold is bounded twice: at most
``max_cold_queue`` requests wait per API (more get 503 at once), and none waits longer than
``cold_start_timeout_s`` (then 503 with Retry-After).

The same wait serves a crash (``wait_ready``): a request that finds no replica able to take it (all dead,
or removed and their replacements not ready yet) waits for the next routing table that lists a ready
replica, within its own deadline, instead of being refused.
"""

from __future__ import annotations

import asyncio

from thrifty.dataplane.gateway_routes import ApiRoute
from thrifty.dataplane.http_messages import Headers, Response, error_response

_RETRY_AFTER: Headers = [(b"retry-after", b"1")]


class ColdStartHold:
    def __init__(self) -> None:
        self._ready: dict[bytes, asyncio.Event] = {}
        self._held: dict[bytes, int] = {}
        self._routes: dict[bytes, ApiRoute] = {}
        self._next_table: asyncio.Event | None = None

    def held(self, name: bytes) -> int:
        return self._held.get(name, 0)

    def routes_changed(self, routes: dict[bytes, ApiRoute]) -> None:
        """Release the requests held for every API that now has a ready replica (or no longer exists)."""
        self._routes = routes
        if self._next_table is not None:
            self._next_table.set()
            self._next_table = None
        for name in list(self._ready):
            route = routes.get(name)
            if route is None or route.replicas_ready:
                self._ready.pop(name).set()

    async def hold(self, route: ApiRoute, rid: bytes) -> ApiRoute | Response:
        """Wait for a ready replica; returns the route to use, or the error response to send."""
        name = route.name_bytes
        if self.held(name) >= route.max_cold_queue:
            return error_response(
                503, "cold_start_queue_full",
                f"{route.name!r} is starting from zero and already holds {route.max_cold_queue} requests",
                rid, _RETRY_AFTER,
            )  # fmt: skip
        if not await self.wait_ready(name, route.cold_start_timeout_s):
            return error_response(
                503, "cold_start_timeout",
                f"no replica of {route.name!r} became ready within {route.cold_start_timeout_s:g}s",
                rid, _RETRY_AFTER,
            )  # fmt: skip
        current = self._routes.get(name)
        if current is None:
            return error_response(404, "api_not_found", f"{route.name!r} was deleted while starting", rid)
        return current

    async def wait_table(self, timeout_s: float) -> bool:
        """Wait for the next routing table, whatever it holds; False on timeout."""
        event = self._next_table
        if event is None:
            event = self._next_table = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    async def wait_ready(self, name: bytes, timeout_s: float) -> bool:
        """Wait until a routing table lists a ready replica of ``name`` (or drops the API); False on timeout.

        Callers bound the number of waiters themselves (``held``)."""
        event = self._ready.get(name)
        if event is None:
            event = self._ready[name] = asyncio.Event()
        self._held[name] = self.held(name) + 1
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._held[name] -= 1
        return True
