"""Multi-model test predictors (loaded by file path, like users'). A model folder holds ``model.json``:
``{"name", "version"}`` plus optional ``"broken": true`` (load_model raises) or ``"load_s": seconds``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any


class Models:
    """Sync. predict(payload, model) -> which model answered, and ``config["tag"]`` (tells replicas apart).
    A payload ``{"wait": true}`` blocks until the test opens ``gate``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.tag = config.get("tag", "")
        self.gate = threading.Event()
        self.loads: list[str] = []

    def load_model(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((Path(path) / "model.json").read_text())
        self.loads.append(f"{data['name']}/{data['version']}")
        if data.get("broken"):
            raise ValueError("corrupt weights")
        time.sleep(float(data.get("load_s", 0)))
        return data

    def predict(self, payload: Any, model: dict[str, Any]) -> Any:
        if isinstance(payload, dict) and payload.get("wait") and not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        return {"model": model["name"], "version": model["version"], "tag": self.tag, "payload": payload}


class AsyncModels:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    async def load_model(self, path: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        data: dict[str, Any] = json.loads((Path(path) / "model.json").read_text())
        return data

    async def predict(self, payload: Any, model: dict[str, Any]) -> Any:
        return {"model": model["name"], "version": model["version"], "async": True}


class BatchModels:
    def __init__(self, config: dict[str, Any]) -> None:
        self.calls: list[list[str]] = []

    def load_model(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((Path(path) / "model.json").read_text())
        return data

    def predict(self, payload: Any, model: dict[str, Any]) -> Any:
        return {"model": model["name"]}

    def predict_batch(self, payloads: list[Any], models: list[dict[str, Any]]) -> list[Any]:
        self.calls.append([m["name"] for m in models])
        return [
            {"model": m["name"], "payload": p, "batch": len(payloads)} for p, m in zip(payloads, models, strict=True)
        ]


class NoLoader:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, payload: Any, model: Any) -> Any:
        return payload
