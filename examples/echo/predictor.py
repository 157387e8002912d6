"""A no-op predictor: returns the payload it was given. Used to measure the platform's own overhead."""

from __future__ import annotations

from typing import Any


class EchoPredictor:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    # async: a predict this cheap would spend more time being handed to a worker thread than running,
    # so it runs on the replica's event loop instead.
    async def predict(self, payload: Any) -> Any:
        return payload

    async def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return payloads
