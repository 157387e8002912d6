"""Streaming benchmark predictor: an async generator of ``n`` chunks of ``size`` bytes, ``delay`` seconds apart.

With payload {"mark": path}, the generator writes ``time.monotonic()`` (system-wide on Linux) to ``path`` when it
is closed, so the benchmark measures the time from a client's disconnect to the generator's end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


class Tokens:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    async def predict(self, payload: Any) -> AsyncIterator[bytes]:
        chunk = b"t" * int(payload.get("size", 8))
        delay = float(payload.get("delay", 0))
        try:
            for _ in range(int(payload.get("n", 100))):
                yield chunk
                if delay:
                    await asyncio.sleep(delay)
        finally:
            if payload.get("mark"):
                Path(payload["mark"]).write_text(repr(time.monotonic()))  # noqa: ASYNC240 (a few bytes, once)
