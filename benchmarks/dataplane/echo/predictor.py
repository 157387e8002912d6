"""The benchmark's echo predictor (same as examples/echo): returns its payload; async, so it runs on the loop."""

from __future__ import annotations

from typing import Any


class EchoPredictor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def predict(self, payload: Any) -> Any:
        return payload


class SyncEchoPredictor:
    """The same, as a plain (sync) method: measures the hand-off to a worker thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def predict(self, payload: Any) -> Any:
        return payload
