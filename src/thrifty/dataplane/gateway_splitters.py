"""Traffic splitters at the gateway: one URL whose requests go to several APIs by weight, plus shadow copies.

A request to ``/<splitter>[/...]`` (or ``/v2/models/<splitter>/...`` when its backends speak V2) picks a
backend with ``policy.splitting`` (smooth weighted round robin; by a stable hash of ``sticky_header`` when the
request carries it) and then goes through exactly the path of a request to that API (``GatewayApp._forward``:
its API keys, the hold while it scales from zero, retries, timeouts). The response says which API served it
(``X-Thrifty-Backend``). Figures per backend are kept per splitter (``gateway_stats.SplitterStats``) for
``thrifty get`` and the automated canary.

Weights come from the routing table, which the operator replaces as a whole: a splitter whose weights did not
change keeps its round-robin state; one whose weights changed starts a fresh one. Requests in flight finish on
the backend they were given, so a weight change or a backend swap fails nothing.

Shadow (``shadow: {api, percent}``): a copy of ``percent`` % of the requests (spread evenly: every
``100/percent``-th) goes to the shadow API, fire and forget. ``ShadowSender`` runs each copy in its own task,
at most ``max_pending`` at once: beyond that a copy is dropped and counted, never queued without bound and
never awaited by the client's request. Each copy's status and latency are recorded for the shadow API; its
body is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from thrifty.dataplane.gateway_routes import DEFAULT_MAX_PAYLOAD, ApiRoute, RoutesDoc
from thrifty.dataplane.gateway_stats import SplitterStats
from thrifty.dataplane.http_messages import Request, Response, StreamResponse, drain
from thrifty.policy.splitting import Split, SplitState, choose, choose_sticky

_log = logging.getLogger("thrifty.gateway")
MAX_PENDING_SHADOW = 256  # shadow copies in flight at once per gateway; more are dropped (and counted)

Forward = Callable[[Request, ApiRoute, bytes], Awaitable[Response]]


class SplitterRoute:
    __slots__ = (
        "_shadow_credit", "backends", "max_payload", "name", "shadow", "shadow_percent", "split", "state", "stats",
        "sticky", "v2",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        split: Split,
        state: SplitState,
        sticky: bytes | None,
        shadow: str | None,
        shadow_percent: float,
        stats: SplitterStats,
    ) -> None:
        self.name = name
        self.split = split
        self.state = state
        self.backends = tuple(n.encode("utf-8") for n in split.names)  # by the index the policy returns
        self.sticky = sticky  # lower-cased header name, as the HTTP core stores them
        self.shadow = shadow.encode("utf-8") if shadow is not None else None
        self.shadow_percent = shadow_percent
        self._shadow_credit = 0.0
        self.stats = stats
        self.max_payload = DEFAULT_MAX_PAYLOAD  # the largest of its backends' (set by build_splitters)
        self.v2 = False  # its backends speak the Open Inference Protocol

    def pick(self, request: Request) -> bytes:
        """The backend API for this request."""
        if self.sticky is not None:
            key = request.headers.get(self.sticky)
            if key is not None:
                return self.backends[choose_sticky(self.split, key)]
        return self.backends[choose(self.split, self.state)]

    def take_shadow(self) -> bool:
        """Whether this request is copied to the shadow: ``percent`` of them, evenly spread."""
        self._shadow_credit += self.shadow_percent
        if self._shadow_credit >= 100.0:
            self._shadow_credit -= 100.0
            return True
        return False


def build_splitters(
    doc: RoutesDoc, old: dict[bytes, SplitterRoute], routes: dict[bytes, ApiRoute]
) -> dict[bytes, SplitterRoute]:
    """The live splitters of a new table: round-robin state kept where the weights did not change, figures
    kept for every splitter that stays."""
    new: dict[bytes, SplitterRoute] = {}
    for name, s in doc.splitters.items():
        key = name.encode("utf-8")
        prev = old.get(key)
        split = Split.of((b.api, b.weight) for b in s.backends)
        state = prev.state if prev is not None and prev.split == split else SplitState(split)
        route = SplitterRoute(
            name,
            split,
            state,
            s.sticky_header.lower().encode("ascii") if s.sticky_header else None,
            s.shadow.api if s.shadow is not None else None,
            s.shadow.percent if s.shadow is not None else 0.0,
            prev.stats if prev is not None else SplitterStats(),
        )
        apis = [routes[b] for b in route.backends if b in routes]
        if apis:
            route.max_payload = max(r.max_payload for r in apis)
            route.v2 = all(r.v2 for r in apis)
        if prev is not None:
            route._shadow_credit = prev._shadow_credit
        new[key] = route
    return new


class ShadowSender:
    """Sends shadow copies without making anyone wait for them (see the module docstring)."""

    def __init__(self, forward: Forward, clock: Callable[[], float], max_pending: int = MAX_PENDING_SHADOW) -> None:
        self._forward = forward
        self._clock = clock
        self.max_pending = max_pending
        self.pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, request: Request, route: ApiRoute | None, fwd_path: bytes, stats: SplitterStats, api: str) -> None:
        if route is None or self.pending >= self.max_pending:
            stats.shadow_dropped += 1
            return
        copy = Request(request.method, request.path, request.query, dict(request.headers))
        copy.body = request.body
        self.pending += 1
        task = asyncio.get_running_loop().create_task(self._run(copy, route, fwd_path, stats, api))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: Request, route: ApiRoute, fwd_path: bytes, stats: SplitterStats, api: str) -> None:
        start = self._clock()
        status = 502
        try:
            resp = await self._forward(request, route, fwd_path)
            status = resp.status
            if isinstance(resp, StreamResponse):  # read to its end like a client would, then dropped
                await drain(resp.chunks)
        except Exception:  # a shadow's failure is the shadow's business: logged, counted, never the client's
            _log.exception("shadow copy to %s failed", api)
        finally:
            self.pending -= 1
            stats.shadow_of(api).record(status, self._clock() - start)

    async def close(self) -> None:
        """Cancel the copies still in flight (the gateway is stopping)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
