"""A predictor whose __init__ raises: the replica must report where and exit with code 3."""

from __future__ import annotations

from typing import Any


def _load_weights(path: str) -> None:
    raise FileNotFoundError(f"no weights at {path}")


class Broken:
    def __init__(self, config: dict[str, Any]) -> None:
        _load_weights(config.get("weights", "model.bin"))

    def predict(self, payload: Any) -> Any:
        return payload
