"""A CPU-utilisation autoscaler after Kubernetes' HorizontalPodAutoscaler: a **simulator baseline only**.

The cost simulator's ``hpa-cpu`` strategy compares thrifty's queue-based autoscaler with the autoscaler most
deployments get by default. The platform itself never uses this policy. Pure, like every policy:

- ``desired = ceil(current * utilisation / target)`` (the HPA algorithm, one metric);
- no change while ``|utilisation / target - 1| <= tolerance`` (HPA's 10%);
- a scale-down takes the highest recommendation of the last ``downscale_stabilization_s`` (HPA's 300 s);
- clamped to ``[min_replicas, max_replicas]``.

Utilisation is the share of the replicas' execution slots busy (the simulator's stand-in for CPU use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HpaConfig:
    min_replicas: int = 1
    max_replicas: int = 100
    target_utilization: float = 0.7
    tolerance: float = 0.1
    downscale_stabilization_s: float = 300.0


@dataclass(frozen=True, slots=True)
class HpaState:
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, desired) within the stabilization window


def decide(cfg: HpaConfig, utilization: float, current: int, state: HpaState, now_s: float) -> tuple[int, HpaState]:
    ratio = utilization / cfg.target_utilization
    if current == 0 or abs(ratio - 1.0) <= cfg.tolerance:
        raw = max(current, cfg.min_replicas)
    else:
        raw = math.ceil(current * ratio)
    raw = min(max(raw, cfg.min_replicas), cfg.max_replicas)
    start = now_s - cfg.downscale_stabilization_s
    recs = (*(r for r in state.recommendations if r[0] > start), (now_s, raw))
    desired = raw if raw >= current else min(current, max(d for _, d in recs))
    return desired, HpaState(recs)
