"""Test predictors for the data-plane integration tests (not a package: loaded by file path, like users')."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any


class Echo:
    """Sync. Payload commands: {"raise": msg}, {"sleep": s}, {"bytes": str}, {"text": str}, {"exit": code},
    {"unserialisable": true}; anything else is echoed back."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def predict(self, payload: Any) -> Any:
        if isinstance(payload, bytes):
            return {"type": "bytes", "length": len(payload)}
        if isinstance(payload, dict):
            if "raise" in payload:
                raise ValueError(payload["raise"])
            if "sleep" in payload:
                time.sleep(float(payload["sleep"]))
                return {"slept": payload["sleep"]}
            if "bytes" in payload:
                return str(payload["bytes"]).encode()
            if "text" in payload:
                return str(payload["text"])
            if "exit" in payload:
                os._exit(int(payload["exit"]))
            if "unserialisable" in payload:
                return object()
        return {"payload": payload, "type": type(payload).__name__}


class AsyncEcho:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def predict(self, payload: Any) -> Any:
        if isinstance(payload, dict) and "sleep" in payload:
            await asyncio.sleep(float(payload["sleep"]))
        return {"payload": payload, "async": True}


class Gated:
    """predict() blocks until the test opens ``gate``; ``started`` counts calls that began."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.order: list[Any] = []
        self._lock = threading.Lock()

    def predict(self, payload: Any) -> Any:
        with self._lock:
            self.order.append(payload)
        self.started.release()
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        return {"done": payload}


class Batcher:
    """Records each predict_batch call's size."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[int] = []
        self.wrong_length = bool(config.get("wrong_length", False))

    def predict(self, payload: Any) -> Any:
        return {"single": payload}

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        self.calls.append(len(payloads))
        if self.wrong_length:
            return payloads[:-1]
        return [{"batched": p, "batch_size": len(payloads)} for p in payloads]


class AsyncBatcher:
    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[int] = []

    async def predict(self, payload: Any) -> Any:
        return {"single": payload}

    async def predict_batch(self, payloads: list[Any]) -> list[Any]:
        self.calls.append(len(payloads))
        return [{"batched": p, "batch_size": len(payloads)} for p in payloads]


class NoBatch:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, payload: Any) -> Any:
        return payload


class SlowInit:
    """__init__ waits until the file named by config["go_file"] exists (the test controls when loading ends)."""

    def __init__(self, config: dict[str, Any]) -> None:
        deadline = time.monotonic() + 20
        while not os.path.exists(config["go_file"]):
            if time.monotonic() > deadline:
                raise TimeoutError("go_file never appeared")
            time.sleep(0.01)

    def predict(self, payload: Any) -> Any:
        return {"payload": payload}
