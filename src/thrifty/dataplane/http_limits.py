"""The HTTP core's resource caps and the one timeout sweep that enforces them (``HttpServer``'s base).

- at most ``max_connections`` open client connections: beyond, ``connection_opened`` refuses a new one
  (the connection answers 503 and closes);
- ``head_timeout_s`` to receive a request head and ``body_timeout_s`` to receive its body (408, close);
  ``keep_alive_timeout_s`` of idleness between requests (closed quietly); ``keep_alive_timeout_s`` for a
  client that reads none of a response it is sent (aborted); each is counted in ``HttpServerStats``.

Timeouts cost nothing per request: each connection keeps one deadline (a float, in the loop's monotonic
clock as last read by the sweep) and what that deadline means (its phase); one periodic sweep per server
refreshes the deadlines of what starts next and expires the connections whose deadline has passed. The
sweep also hands freed memory back to the OS once many connections have closed since the peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Protocol

MAX_HEAD_BYTES = 64 * 1024
MAX_CONNECTIONS = 10_000
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
KEEP_ALIVE_TIMEOUT_S = 75.0

# Once this many connections have closed since the peak (and at least half of them), the freed memory is
# handed back to the OS (glibc keeps freed small blocks otherwise, and the RSS stays at its peak).
RELEASE_AFTER_CLOSES = 1000

NEVER = float("inf")
# What a connection's deadline means when it passes.
IDLE, HEAD, BODY, WRITE = 0, 1, 2, 3


class LimitedConnection(Protocol):
    """What the server needs of a connection: its deadline, what to do once it has passed, and closing."""

    deadline: float

    def expire(self) -> None: ...

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class HttpServerStats:
    """Plain counters, read at scrape time (e.g. by the gateway's Prometheus collector)."""

    __slots__ = ("body_timeouts", "connections_refused", "head_timeouts", "idle_closes", "open_connections",
                 "write_timeouts")  # fmt: skip

    def __init__(self) -> None:
        self.open_connections = 0  # gauge
        self.connections_refused = 0  # over max_connections: answered 503
        self.head_timeouts = 0  # 408: the request head did not arrive in time
        self.body_timeouts = 0  # 408: the request body did not arrive in time
        self.idle_closes = 0  # keep-alive connections closed after keep_alive_timeout_s of idleness
        self.write_timeouts = 0  # clients that read nothing of their response for keep_alive_timeout_s


class ConnectionLimits:
    """The open connections, their caps and deadlines, and the sweep (a base of ``HttpServer``)."""

    def __init__(
        self,
        *,
        keep_alive_timeout_s: float,
        head_timeout_s: float,
        body_timeout_s: float,
        max_connections: int,
    ) -> None:
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        # Deadlines are checked this often, so each timeout is enforced within a quarter of itself (<= 1 s).
        self._sweep_s = min(1.0, max(0.01, min(keep_alive_timeout_s, head_timeout_s, body_timeout_s) / 4))
        # Deadlines of what starts now, as of the last sweep: one attribute read per request, no clock call.
        self.idle_deadline = self.head_deadline = self.body_deadline = 0.0
        self.stats = HttpServerStats()
        self.connections: set[LimitedConnection] = set()
        self._peak_connections = 0
        self._release_memory = _memory_releaser()
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None

    def _start_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(self._sweep_s, self._sweep, loop)

    def _stop_sweep(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer per server instead of one per request or per connection.
        now = loop.time()
        self._set_deadlines(now)
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expire()
        open_now = len(self.connections)
        if self._peak_connections - open_now >= max(RELEASE_AFTER_CLOSES, open_now):
            self._peak_connections = open_now
            self.connections = set(self.connections)  # a set never shrinks its table by itself
            self._release_memory()
        self._sweeper = loop.call_later(self._sweep_s, self._sweep, loop)

    def _set_deadlines(self, now: float) -> None:
        self.idle_deadline = now + self.keep_alive_timeout_s
        self.head_deadline = now + self.head_timeout_s
        self.body_deadline = now + self.body_timeout_s

    def connection_opened(self, conn: LimitedConnection) -> bool:
        """Admit ``conn`` unless the server is at ``max_connections``."""
        if len(self.connections) >= self.max_connections:
            self.stats.connections_refused += 1
            return False
        self.connections.add(conn)
        self.stats.open_connections += 1
        if len(self.connections) > self._peak_connections:
            self._peak_connections = len(self.connections)
        return True

    def connection_closed(self, conn: LimitedConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.stats.open_connections -= 1
        if self.stopping and not self.connections and self._all_closed is not None:
            self._all_closed.set()


def _memory_releaser() -> Callable[[], object]:
    """``malloc_trim(0)`` where the C library has it (glibc), else nothing."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(name).malloc_trim if name else None
        if trim is not None:
            return lambda: trim(0)
    return lambda: None
