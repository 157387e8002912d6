"""Predictors with predict_batch and no predict (valid only with serving.batching)."""

from __future__ import annotations

import asyncio
from typing import Any


class BatchOnly:
    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[int] = []

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        self.calls.append(len(payloads))
        return [{"doubled": p * 2, "batch_size": len(payloads)} for p in payloads]


class AsyncBatchOnly:
    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[int] = []

    async def predict_batch(self, payloads: list[Any]) -> list[Any]:
        await asyncio.sleep(0)
        self.calls.append(len(payloads))
        return [{"doubled": p * 2} for p in payloads]


class Nothing:
    """Neither predict nor predict_batch."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass
