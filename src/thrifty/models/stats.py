"""Per-model counters of the model cache, as the replica exports them to /metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class ModelStats:
    hits: int = 0  # request found the model in memory
    misses: int = 0  # request had to wait for a load (its own or one already in flight)
    loads: int = 0  # successful loads into memory
    load_seconds_sum: float = 0.0  # download (if needed) + load_model, over successful loads
    load_failures: int = 0
    downloads: int = 0
    download_bytes: int = 0
    memory_evictions: int = 0
    disk_evictions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
