"""The multi-model benchmark's predictor: loading a model takes ``load_s`` (0.2 s), predicting almost nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class Bench:
    def __init__(self, config: dict[str, Any]) -> None:
        self.load_s = float(config.get("load_s", 0.2))

    def load_model(self, path: str) -> str:
        time.sleep(self.load_s)  # stands in for reading and deserialising weights
        return (Path(path) / "model.txt").read_text()

    def predict(self, payload: Any, model: str) -> Any:
        return {"model": model}
