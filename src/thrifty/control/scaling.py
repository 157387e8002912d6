"""Feeding the autoscaling policy: per-API in-flight samples and policy state, one tick a second.

The signal is the API's average in-flight requests over the last second (queued + executing in replicas
+ held at the gateway). The gateway keeps a cumulative integral of in-flight over time
(``in_flight_seconds``), so the average between two snapshots is exact however bursty the traffic;
without it the instantaneous count is used.

A multi-model API with ``models.keep_warm`` also gets a floor from the gateway's count of the distinct
models asked for within that window (``policy.keep_warm``): the policy then sees ``min_replicas`` raised to
the floor (never above ``max_replicas``), and its reason says so.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from thrifty.config.schema import ApiConfig
from thrifty.policy.autoscaling import AutoscalerState, ScalingDecision, decide
from thrifty.policy.keep_warm import warm_floor


@dataclass
class ApiScaler:
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    state: AutoscalerState = field(default_factory=AutoscalerState)
    last_integral: tuple[float, float] | None = None  # (t_s, in_flight_seconds) of the previous snapshot
    last_decision: dict[str, Any] | None = None
    models_recent: int | None = None  # distinct models asked for within keep_warm, as the gateway last said

    def observe(self, t_s: float, api_stats: dict[str, Any], keep_s: float) -> float:
        """Turn one gateway snapshot of this API into an in-flight sample; returns the sample."""
        value = float(api_stats.get("in_flight", 0))
        recent = api_stats.get("models_recent")
        self.models_recent = int(recent) if isinstance(recent, int | float) and recent >= 0 else None
        integral = api_stats.get("in_flight_seconds")
        if integral is not None:
            integral = float(integral)
            prev = self.last_integral
            if prev is not None and t_s > prev[0] and integral >= prev[1]:
                value = (integral - prev[1]) / (t_s - prev[0])
            self.last_integral = (t_s, integral)
        self.samples.append((t_s, value))
        while self.samples and self.samples[0][0] < t_s - keep_s:
            self.samples.popleft()
        return value

    def reset_signal(self) -> None:
        """The gateway restarted: its cumulative counters began again."""
        self.last_integral = None

    def tick(self, api: ApiConfig, current: int, now_s: float) -> ScalingDecision:
        cfg = api.autoscaling
        floor = 0
        models = api.models
        if models is not None and models.keep_warm and models.cache_size and self.models_recent is not None:
            floor = min(warm_floor(self.models_recent, models.cache_size), cfg.max_replicas)
            if floor > cfg.min_replicas:
                cfg = cfg.model_copy(update={"min_replicas": floor})
        decision = decide(cfg, api.target_in_flight, list(self.samples), current, self.state, now_s)
        if floor and models is not None:
            decision.reason["keep_warm"] = {"models_recent": self.models_recent, "floor": floor,
                                            "window_s": models.keep_warm}  # fmt: skip
            if floor > api.autoscaling.min_replicas and decision.desired == floor:
                decision.reason["summary"] = (
                    f"{decision.reason.get('summary', '')} (keep_warm: {self.models_recent} models asked for in "
                    f"the last {models.keep_warm:g}s need {floor} replicas' memory caches)"
                ).strip()
        self.state = decision.state
        self.last_decision = decision.reason
        return decision


def keep_seconds(api: ApiConfig) -> float:
    return max(api.autoscaling.window, api.autoscaling.panic_window) + 2.0


class Autoscaler:
    """One ApiScaler per deployed API, fed from one gateway snapshot a second."""

    def __init__(self) -> None:
        self.scalers: dict[str, ApiScaler] = {}
        self._generation = 0

    def tick(
        self, stats: dict[str, Any], generation: int, apis: dict[str, tuple[ApiConfig, int]], now_s: float
    ) -> dict[str, ScalingDecision]:
        """``apis`` maps each API to (config, requested replicas); returns every API's decision."""
        for name in list(self.scalers):
            if name not in apis:
                del self.scalers[name]
        per_api = stats.get("apis", {})
        out = {}
        for name, (api, current) in apis.items():
            scaler = self.scalers.setdefault(name, ApiScaler())
            if generation != self._generation:
                scaler.reset_signal()  # a new gateway: its cumulative counters began again
            scaler.observe(now_s, per_api.get(name, {}), keep_seconds(api))
            out[name] = scaler.tick(api, current, now_s)
        self._generation = generation
        return out

    def last_decision(self, name: str) -> dict[str, Any] | None:
        scaler = self.scalers.get(name)
        return scaler.last_decision if scaler is not None else None
