import numpy as np


class Scaler:
    """Open Inference Protocol: y = x * scale + offset for a batch of 4-feature rows, plus each row's sum."""

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [
        {"name": "y", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "row_sum", "datatype": "FP64", "shape": [-1]},
    ]

    def __init__(self, config):
        self.scale = np.float32(config.get("scale", 2.0))
        self.offset = np.float32(config.get("offset", 1.0))

    def predict(self, inputs):
        x = inputs["x"]
        return {"y": x * self.scale + self.offset, "row_sum": x.sum(axis=1, dtype=np.float64)}
