"""A CPU-only stand-in for a GPU model: it reports the GPU share the platform gave its replica.

On a machine with GPUs, CUDA_VISIBLE_DEVICES names the one GPU this replica may use and
THRIFTY_GPU_MEMORY_FRACTION its share of that GPU's memory (applied to PyTorch before this file loads).
"""

import os


class Predictor:
    def __init__(self, config):
        self.task = config.get("task", "echo")

    def predict(self, payload):
        return {
            "task": self.task,
            "replica": os.environ.get("THRIFTY_REPLICA_ID"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_memory_fraction": os.environ.get("THRIFTY_GPU_MEMORY_FRACTION"),
        }
