"""How many replicas an API should have, from its in-flight requests.

Cortex's realtime autoscaler (v0.42 ``pkg/autoscaler/autoscaler.go``) step for step, fed by a 1 s signal
instead of 10 s, plus two additions: a panic mode after Knative's KPA (a short window that asks for
``panic_threshold`` x the current replicas scales up at once and blocks scale-down until a full ``window``
has passed below the threshold) and scale to zero (idle for ``scale_to_zero_after``; any in-flight request
while at zero wakes one replica at once).

Pure: the caller passes the config, the in-flight samples, the current (requested) replica count, the
prior state and the time; nothing here reads a clock, logs or does I/O. Every call returns a reason record
with every input and intermediate value, JSON-able, for the events log and ``thrifty get``.

Decisions taken where neither Cortex nor the issue says (each also noted where it is coded):
- The Cortex pipeline never goes below one replica (Cortex v0.30's ``max(rec, 1)``); only the scale-to-zero
  rule goes from one to zero, so ``scale_to_zero_after`` and not the downscale period decides when.
- Panic compares the unrounded panic recommendation with ``panic_threshold x current``: KPA rounds up
  first, which would make a one-replica API panic as soon as its 6 s average exceeded the target by a hair.
- Panic ignores ``max_upscale_factor``, the tolerance band and the upscale stabilization period, as KPA does
  (its only per-step bound is max-scale-up-rate 1000x, kept here), but not ``max_replicas``.
- While panicking, the recorded recommendation is the larger of the Cortex and the panic recommendation,
  so the downscale stabilization period also holds the panic level after panic ends.
- Scale to zero needs the Cortex result (after stabilization) to be <= 1, no panic, and no sample > 0 for
  ``scale_to_zero_after``; never seen busy counts from the first tick. No samples at all never scales to
  zero (a metrics outage is not idleness).
- At zero, demand means any sample > 0 within ``panic_window``; the wake goes to 1 (Cortex's Awaken), and
  nothing is recorded while at zero, so an upscale period cannot hold back the replicas that follow.
- No samples in ``window``: hold, but still clamp to [min_replicas, max_replicas], as every result is.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter, le
from typing import Any

from thrifty.config.schema import AutoscalingConfig
from thrifty.errors import ThriftyError

# Knative's max-scale-up-rate: the only per-step bound on a panic scale-up besides max_replicas.
PANIC_MAX_UPSCALE_FACTOR = 1000.0
# Keeps ceil() finite when target_in_flight is tiny; far above any replica count max_replicas allows.
RAW_RECOMMENDATION_CAP = 1e9

# Cortex's realtime autoscaler defaults (shared/reference/cortex.md section 1a) as overrides of thrifty's
# AutoscalingConfig: the baselines of benchmarks/autoscaling and of the cost simulator's `cortex` strategy.
# Cortex has no panic mode; a threshold no load reaches switches ours off.
NO_PANIC_THRESHOLD = 1e9
CORTEX_DEFAULTS: dict[str, float] = {
    "window": 60.0,
    "upscale_stabilization_period": 60.0,
    "downscale_stabilization_period": 300.0,
    "max_upscale_factor": 1.5,
    "max_downscale_factor": 0.75,
    "upscale_tolerance": 0.05,
    "downscale_tolerance": 0.05,
    "panic_threshold": NO_PANIC_THRESHOLD,
}


@dataclass(frozen=True)
class AutoscalerState:
    """What the policy remembers between ticks; opaque to callers, starts as ``AutoscalerState()``."""

    # (time_s, recommendation) of the last max(upscale, downscale) stabilization period.
    recommendations: tuple[tuple[float, int], ...] = ()
    # Panic lasts until this time unless the threshold is crossed again; None = not panicking.
    panic_until_s: float | None = None
    # KPA's maxPanicPods: panic only ratchets up.
    panic_max_replicas: int = 0
    # First tick: Cortex neither scales down nor up before the autoscaler has lived one period.
    started_s: float | None = None
    # Time of the newest sample with in-flight > 0, for scale to zero.
    last_busy_s: float | None = None


@dataclass(frozen=True)
class ScalingDecision:
    desired: int
    state: AutoscalerState
    reason: dict[str, Any]


def decide(
    cfg: AutoscalingConfig,
    target_in_flight: float,
    samples: Sequence[tuple[float, float]],
    current_replicas: int,
    state: AutoscalerState,
    now_s: float,
) -> ScalingDecision:
    """One autoscaler tick.

    ``samples`` are (time_s, API-wide in-flight = queued + executing + held at the gateway); samples in
    ``(now_s - window, now_s]`` count, older or newer ones are ignored. Averages are plain means of the
    samples present (Cortex: sum / count), so gaps shrink the sample count, not the average.
    """
    _check_inputs(target_in_flight, samples, current_replicas, now_s)
    cur = current_replicas
    started_s = now_s if state.started_s is None else state.started_s
    avg, n_window = _mean_between(samples, now_s - cfg.window, now_s)
    panic_avg, n_panic = _mean_between(samples, now_s - cfg.panic_window, now_s)
    last_busy_s = _last_busy(samples, now_s, state.last_busy_s)
    r = _blank_reason(cfg, target_in_flight, cur, now_s)
    r["window"].update(samples=n_window, avg_in_flight=avg)
    r["panic"].update(samples=n_panic, avg_in_flight=panic_avg)
    state = AutoscalerState(
        recommendations=state.recommendations,
        panic_until_s=state.panic_until_s,
        panic_max_replicas=state.panic_max_replicas,
        started_s=started_s,
        last_busy_s=last_busy_s,
    )

    if avg is None:
        # Cortex skips the tick ("metrics not available yet"); only the bounds still apply.
        desired = _clamp(cur, cfg.min_replicas, cfg.max_replicas)
        why = f"no in-flight samples in the last {cfg.window:g}s: hold"
        return _finish(r, cur, desired, state, why if desired == cur else f"{why}, clamped to bounds")

    if cur == 0 and cfg.min_replicas == 0:
        # Requests are held at the gateway while at zero, so any in-flight means someone waits: one
        # replica now (Cortex's Awaken), no stabilization; panic takes over on the next ticks if needed.
        demand = panic_avg is not None and panic_avg > 0
        r["wake_from_zero"] = {"demand": demand, "window_s": cfg.panic_window}
        if demand:
            return _finish(r, cur, 1, state, "in-flight requests while at zero replicas: wake one replica")
        return _finish(r, cur, 0, state, "idle at zero replicas: hold")

    raw = min(avg / target_in_flight, RAW_RECOMMENDATION_CAP)
    rec = _cortex_recommendation(cfg, raw, cur, r)

    over, panic_rec, panic_until_s = _panic_signal(cfg, target_in_flight, panic_avg, cur, state, now_s, r)
    panicking = panic_until_s is not None
    recorded = max(rec, panic_rec) if panicking and panic_rec is not None else rec

    history = _prune((*state.recommendations, (now_s, recorded)), cfg, now_s)
    request = _stabilize(cfg, rec, cur, history, now_s - started_s, now_s, r)

    desired = request
    panic_max = 0
    if panicking:
        # KPA: provision for the larger of stable and panic, and never go down while panicking.
        panic_max = max(request, panic_rec or 0, state.panic_max_replicas, cur)
        desired = panic_max
    r["panic"].update(active=panicking, until_s=panic_until_s, max_replicas=panic_max or None)

    desired = _clamp(desired, cfg.min_replicas, cfg.max_replicas)
    desired = _scale_to_zero(cfg, desired, cur, panicking, last_busy_s, started_s, now_s, r)

    state = AutoscalerState(
        recommendations=history,
        panic_until_s=panic_until_s,
        panic_max_replicas=panic_max,
        started_s=started_s,
        last_busy_s=last_busy_s,
    )
    why = _summary(r, cur, desired, raw, avg, panicking, over)
    return _finish(r, cur, desired, state, why)


def _cortex_recommendation(cfg: AutoscalingConfig, raw: float, cur: int, r: dict[str, Any]) -> int:
    """Steps 1-4 of Cortex: round up, tolerance band, factor limits with +-1, clamp. Before recording."""
    r["raw_recommendation"] = raw
    rec = math.ceil(raw)
    r["ceil_raw"] = rec
    # Cortex's exact form: strict inequalities on the unrounded raw value, one band on each side.
    lower, upper = cur * (1 - cfg.downscale_tolerance), cur * (1 + cfg.upscale_tolerance)
    held = lower < raw < cur or cur < raw < upper
    if held:
        rec = cur
    r["tolerance"] = {"lower": lower, "upper": upper, "held": held, "recommendation": rec}
    # Cortex rounds BOTH limits up with ceil(), in float64 like Go: floor = min(cur-1, ceil(cur*down)),
    # ceiling = max(cur+1, ceil(cur*up)); the cur-1 / cur+1 terms are the "always allow +-1" rule.
    floor = min(cur - 1, math.ceil(cur * cfg.max_downscale_factor))
    ceiling = max(cur + 1, math.ceil(cur * cfg.max_upscale_factor))
    limited = _clamp(rec, floor, ceiling)
    r["factor_limits"] = {"floor": floor, "ceiling": ceiling, "limited": limited != rec, "recommendation": limited}
    # The Cortex pipeline keeps at least one replica; going to zero is the scale-to-zero rule's job.
    low = max(cfg.min_replicas, 1)
    clamped = _clamp(limited, low, cfg.max_replicas)
    r["clamp"] = {"min": low, "max": cfg.max_replicas, "recommendation": clamped}
    return clamped


def _panic_signal(
    cfg: AutoscalingConfig,
    target_in_flight: float,
    panic_avg: float | None,
    cur: int,
    state: AutoscalerState,
    now_s: float,
    r: dict[str, Any],
) -> tuple[bool, int | None, float | None]:
    """KPA's panic: (over threshold now, panic recommendation, new panic_until_s)."""
    over = False
    panic_rec: int | None = None
    threshold = cfg.panic_threshold * cur
    if panic_avg is not None and cur >= 1:
        panic_raw = min(panic_avg / target_in_flight, RAW_RECOMMENDATION_CAP)
        # Unrounded comparison: see the module docstring.
        over = panic_raw >= threshold
        ceiling = min(cfg.max_replicas, math.ceil(cur * PANIC_MAX_UPSCALE_FACTOR))
        panic_rec = _clamp(math.ceil(panic_raw), max(cfg.min_replicas, 1), ceiling)
        r["panic"].update(raw=panic_raw, recommendation=panic_rec)
    until = state.panic_until_s
    if over:
        until = now_s + cfg.window
    elif until is not None and now_s > until:
        # KPA un-panics once a full stable window has passed below the threshold (strictly after).
        until = None
    r["panic"].update(threshold_replicas=threshold, over_threshold=over)
    return over, panic_rec, until


def _stabilize(
    cfg: AutoscalingConfig,
    rec: int,
    cur: int,
    history: tuple[tuple[float, int], ...],
    lived_s: float,
    now_s: float,
    r: dict[str, Any],
) -> int:
    """Step 5 of Cortex (v0.42): stabilization against recorded recommendations, after recording."""
    request = rec
    down_floor: int | None = None
    up_ceiling: int | None = None
    held_by: str | None = None
    if request < cur:
        found = _extreme_since(history, now_s - cfg.downscale_stabilization_period, max)
        # v0.42 caps the floor at the current count so the downscale path can never scale up.
        down_floor = None if found is None else min(found, cur)
        if lived_s < cfg.downscale_stabilization_period:
            request, held_by = cur, "no downscale before the autoscaler has lived one downscale period"
        elif down_floor is not None and request < down_floor:
            request, held_by = down_floor, f"downscale stabilization floor {down_floor}"
    if request > cur:
        found = _extreme_since(history, now_s - cfg.upscale_stabilization_period, min)
        up_ceiling = None if found is None else max(found, cur)
        if lived_s < cfg.upscale_stabilization_period:
            request, held_by = cur, "no upscale before the autoscaler has lived one upscale period"
        elif up_ceiling is not None and request > up_ceiling:
            request, held_by = up_ceiling, f"upscale stabilization ceiling {up_ceiling}"
    r["stabilization"] = {
        "lived_s": lived_s,
        "recorded": history[-1][1],
        "downscale_floor": down_floor,
        "upscale_ceiling": up_ceiling,
        "held_by": held_by,
        "request": request,
    }
    return request


def _scale_to_zero(
    cfg: AutoscalingConfig,
    desired: int,
    cur: int,
    panicking: bool,
    last_busy_s: float | None,
    started_s: float,
    now_s: float,
    r: dict[str, Any],
) -> int:
    enabled = cfg.min_replicas == 0
    # Never seen busy: idle counts from the first tick, not from the oldest sample we were handed.
    idle_s = now_s - (last_busy_s if last_busy_s is not None else started_s)
    # Only the last step: the Cortex pipeline must already be down to one replica, so the downscale
    # stabilization and factor limits still govern the way from N to 1.
    applied = enabled and cur >= 1 and not panicking and idle_s >= cfg.scale_to_zero_after and desired <= 1
    r["scale_to_zero"] = {"enabled": enabled, "idle_s": idle_s, "applied": applied}
    return 0 if applied else desired


def _summary(r: dict[str, Any], cur: int, desired: int, raw: float, avg: float, panicking: bool, over: bool) -> str:
    head = f"avg in-flight {avg:.2f} over {r['config']['window_s']:g}s = {raw:.2f} replicas"
    if r["scale_to_zero"]["applied"]:
        return f"{head}; idle {r['scale_to_zero']['idle_s']:g}s: {cur} -> 0 (scale to zero)"
    if panicking:
        p = r["panic"]
        mode = "over threshold" if over else "holding"
        p_avg = "n/a" if p["avg_in_flight"] is None else f"{p['avg_in_flight']:.2f}"
        return f"{head}; panic ({mode}, {p['window_s']:g}s avg {p_avg}): {cur} -> {desired}"
    move = f"{cur} -> {desired}" if desired != cur else f"hold {cur}"
    if r["tolerance"]["held"]:
        return f"{head}; within tolerance band: {move}"
    rec, held_by = r["clamp"]["recommendation"], r["stabilization"]["held_by"]
    if held_by is not None:
        return f"{head}; recommend {rec}, {held_by}: {move}"
    if rec != r["ceil_raw"]:
        return f"{head}; recommend {rec} (factor limits / bounds): {move}"
    return f"{head}; {move}"


def _blank_reason(cfg: AutoscalingConfig, target_in_flight: float, cur: int, now_s: float) -> dict[str, Any]:
    return {
        "now_s": now_s,
        "current_replicas": cur,
        "target_in_flight": target_in_flight,
        "config": {
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "window_s": cfg.window,
            "upscale_stabilization_period_s": cfg.upscale_stabilization_period,
            "downscale_stabilization_period_s": cfg.downscale_stabilization_period,
            "max_upscale_factor": cfg.max_upscale_factor,
            "max_downscale_factor": cfg.max_downscale_factor,
            "upscale_tolerance": cfg.upscale_tolerance,
            "downscale_tolerance": cfg.downscale_tolerance,
            "panic_window_s": cfg.panic_window,
            "panic_threshold": cfg.panic_threshold,
            "scale_to_zero_after_s": cfg.scale_to_zero_after,
        },
        "window": {"samples": 0, "avg_in_flight": None},
        "raw_recommendation": None,
        "ceil_raw": None,
        "tolerance": None,
        "factor_limits": None,
        "clamp": None,
        "stabilization": None,
        "panic": {
            "window_s": cfg.panic_window,
            "samples": 0,
            "avg_in_flight": None,
            "raw": None,
            "recommendation": None,
            "threshold_replicas": None,
            "over_threshold": False,
            "active": False,
            "until_s": None,
            "max_replicas": None,
        },
        "scale_to_zero": None,
        "wake_from_zero": None,
    }


def _finish(r: dict[str, Any], cur: int, desired: int, state: AutoscalerState, summary: str) -> ScalingDecision:
    r["desired"] = desired
    r["action"] = "scale_up" if desired > cur else "scale_down" if desired < cur else "hold"
    r["summary"] = summary
    return ScalingDecision(desired=desired, state=state, reason=r)


def _mean_between(samples: Sequence[tuple[float, float]], after_s: float, until_s: float) -> tuple[float | None, int]:
    values = [v for t, v in samples if after_s < t <= until_s]
    return (math.fsum(values) / len(values) if values else None), len(values)


def _last_busy(samples: Sequence[tuple[float, float]], now_s: float, known_s: float | None) -> float | None:
    busy = [t for t, v in samples if v > 0 and t <= now_s]
    if not busy:
        return known_s
    return max(busy) if known_s is None else max(known_s, *busy)


_time = itemgetter(0)
_rec = itemgetter(1)


def _in_time_order(history: tuple[tuple[float, int], ...]) -> bool:
    # decide() appends at now_s, which only grows: the history is sorted by time, and its windows are
    # suffixes found by bisection. A caller's history out of order (never decide's own) is filtered instead.
    times = list(map(_time, history))
    return all(map(le, times, times[1:]))


def _extreme_since(
    history: tuple[tuple[float, int], ...], since_s: float, pick: Callable[[list[int]], int]
) -> int | None:
    # Cortex: recommendations with time.Since(t) <= period, i.e. inclusive at the old end.
    if _in_time_order(history):
        recs = list(map(_rec, history[bisect_left(history, since_s, key=_time) :]))
    else:
        recs = [rec for t, rec in history if t >= since_s]
    return pick(recs) if recs else None


def _prune(
    history: tuple[tuple[float, int], ...], cfg: AutoscalingConfig, now_s: float
) -> tuple[tuple[float, int], ...]:
    keep_s = max(cfg.downscale_stabilization_period, cfg.upscale_stabilization_period)
    if _in_time_order(history):
        # now_s - t <= keep_s  <=>  t >= now_s - keep_s, up to float rounding: check the boundary exactly.
        i = bisect_left(history, now_s - keep_s, key=_time)
        while i > 0 and now_s - history[i - 1][0] <= keep_s:
            i -= 1
        while i < len(history) and now_s - history[i][0] > keep_s:
            i += 1
        return history[i:]
    return tuple((t, rec) for t, rec in history if now_s - t <= keep_s)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _check_inputs(
    target_in_flight: float, samples: Sequence[tuple[float, float]], current_replicas: int, now_s: float
) -> None:
    # The caller's bugs, not the user's: raised as the root error with details for the operator's log.
    if not (math.isfinite(target_in_flight) and target_in_flight > 0):
        raise ThriftyError("target_in_flight must be a finite number > 0", details={"value": target_in_flight})
    if current_replicas < 0:
        raise ThriftyError("current_replicas must be >= 0", details={"value": current_replicas})
    if not math.isfinite(now_s):
        raise ThriftyError("now_s must be finite", details={"value": now_s})
    values = list(map(_rec, samples))
    if all(map(math.isfinite, map(_time, samples))) and all(map(math.isfinite, values)) and min(values, default=0) >= 0:
        return  # the common case, checked without a Python-level loop; the loop below names the bad sample
    for t, v in samples:
        if not (math.isfinite(t) and math.isfinite(v) and v >= 0):
            raise ThriftyError("in-flight samples must be finite with in-flight >= 0", details={"sample": [t, v]})
