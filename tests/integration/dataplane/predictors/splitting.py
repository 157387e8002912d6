"""Predictors for the splitter and V2 integration tests (loaded by file path, like users')."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class Named:
    """Answers with the name in its config: which API served the request."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.name = config.get("name", "?")

    def predict(self, payload: Any) -> Any:
        return {"served_by": self.name}


class Broken:
    """Always fails."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, payload: Any) -> Any:
        raise RuntimeError("the shadow is broken")


class Stuck:
    """Never answers until the test opens ``gate`` (a shadow that hangs)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def predict(self, payload: Any) -> Any:
        self.calls += 1
        self.gate.wait(30)
        return {"late": True}


class Tensors:
    """V2: doubles INPUT0 and returns the sum of INPUT0 and INPUT1 when given; declares its metadata."""

    inputs = [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "doubled", "datatype": "FP32", "shape": [-1, 4]}]

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, inputs: dict[str, Any]) -> Any:
        x = inputs["INPUT0"]
        if "INPUT1" in inputs:
            return {"doubled": x * 2, "sum": x + inputs["INPUT1"]}
        if "ONE" in inputs:
            return np.asarray(inputs["ONE"]) + 1
        return {"doubled": x * 2}
