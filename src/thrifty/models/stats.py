"""Per-model counters of the model cache, as the replica exports them to /metrics.

Requests answered from the failure memory (a model that failed to load moments ago) count as neither a
hit nor a miss. ``load_seconds_sum``/``load_seconds_count`` form a Prometheus summary over successful
loads; a load's seconds include its download when the version was not on disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class ModelStats:
    hits: int = 0  # the request found the model in memory
    misses: int = 0  # the request waited for a load (its own or one already in flight)
    load_seconds_sum: float = 0.0
    load_seconds_count: int = 0  # successful loads into memory
    load_failures: int = 0
    downloads: int = 0
    download_bytes: int = 0
    memory_evictions: int = 0
    disk_evictions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
