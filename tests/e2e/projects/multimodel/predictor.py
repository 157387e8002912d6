"""A multi-model test predictor. A model folder holds model.json: {"name", "version"}, and "broken": true
makes load_model fail. Each answer names the model, its version and the replica that served it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Models:
    def __init__(self, config: dict[str, Any]) -> None:
        self.replica = os.environ.get("THRIFTY_REPLICA_ID", "")

    def load_model(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((Path(path) / "model.json").read_text())
        if data.get("broken"):
            raise ValueError("corrupt weights")
        return data

    def predict(self, payload: Any, model: dict[str, Any]) -> Any:
        return {"model": model["name"], "version": model["version"], "replica": self.replica, "payload": payload}
