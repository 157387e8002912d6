"""The autoscaling policy, tick by tick on a virtual clock (no sleeping, no patching of time)."""

from __future__ import annotations

import json
import math
import random
from collections import deque
from typing import Any

import pytest

from thrifty.config.schema import AutoscalingConfig
from thrifty.errors import ThriftyError
from thrifty.policy.autoscaling import AutoscalerState, ScalingDecision, _extreme_since, _prune, decide

NO_PANIC = 1e9  # a panic_threshold no load in these tests reaches


def config(**overrides: Any) -> AutoscalingConfig:
    return AutoscalingConfig(**overrides)


def flat(in_flight: float, now_s: float, seconds: int = 60) -> list[tuple[float, float]]:
    """One sample a second for the last `seconds`, all equal."""
    return [(now_s - k, in_flight) for k in range(seconds)]


def old_state(now_s: float) -> AutoscalerState:
    """An autoscaler that has lived long enough for every stabilization rule to be active."""
    return AutoscalerState(started_s=now_s - 10_000)


class Driver:
    """Feeds one in-flight sample a second into decide() and applies each decision at once."""

    def __init__(self, cfg: AutoscalingConfig, *, replicas: int, target: float = 1.0, period_s: float = 1.0) -> None:
        self.cfg, self.target, self.period_s = cfg, target, period_s
        self.replicas = replicas
        self.state = AutoscalerState()
        self.now_s = 0.0
        self.samples: deque[tuple[float, float]] = deque()
        self.log: list[tuple[float, int, ScalingDecision]] = []  # (time, replicas before, decision)

    def prefill(self, in_flight: Any, seconds: int) -> None:
        """Samples from before the first tick, as an operator that kept its metrics would pass."""
        for k in range(seconds, 0, -1):
            self.samples.append((self.now_s - k * self.period_s, in_flight(self.now_s - k * self.period_s)))

    def tick(self, in_flight: float) -> ScalingDecision:
        self.samples.append((self.now_s, in_flight))
        while self.samples[0][0] <= self.now_s - max(self.cfg.window, self.cfg.panic_window):
            self.samples.popleft()
        d = decide(self.cfg, self.target, list(self.samples), self.replicas, self.state, self.now_s)
        json.dumps(d.reason, allow_nan=False)  # every reason record is strict JSON
        assert d.reason["desired"] == d.desired and d.reason["summary"]
        self.log.append((self.now_s, self.replicas, d))
        self.replicas, self.state = d.desired, d.state
        self.now_s += self.period_s
        return d

    def run(self, in_flight: float, seconds: int) -> list[ScalingDecision]:
        return [self.tick(in_flight) for _ in range(seconds)]

    def changes(self) -> list[tuple[float, int, int]]:
        return [(t, before, d.desired) for t, before, d in self.log if d.desired != before]


# --- Cortex rules, one tick each, stabilization out of the way --------------------------------------------

CORTEX_ONLY = {"downscale_stabilization_period": 0.0, "upscale_stabilization_period": 0.0, "panic_threshold": NO_PANIC}


@pytest.mark.parametrize(
    ("rule", "current", "avg_in_flight", "target", "overrides", "expected"),
    [
        # raw = avg / target, rounded up
        ("ceil", 4, 5.5, 1.0, {}, 6),
        ("ceil with target", 4, 10.0, 2.0, {}, 5),
        ("exact", 4, 4.0, 1.0, {}, 4),
        # tolerance band (strict inequalities on the unrounded raw value)
        ("inside upper band", 10, 10.4, 1.0, {}, 10),
        ("on upper band edge scales", 10, 10.5, 1.0, {}, 11),
        ("above upper band", 10, 10.6, 1.0, {}, 11),
        ("inside lower band", 40, 38.5, 1.0, {}, 40),
        ("on lower band edge scales", 40, 38.0, 1.0, {}, 38),
        ("below lower band", 40, 37.5, 1.0, {}, 38),
        ("wider upper band", 10, 11.9, 1.0, {"upscale_tolerance": 0.2}, 10),
        # factor limits: ceiling = max(cur+1, ceil(cur*up)), floor = min(cur-1, ceil(cur*down))
        ("upscale factor", 4, 20.0, 1.0, {}, 6),
        ("upscale factor rounds up", 3, 20.0, 1.0, {}, 5),
        ("upscale +1 from one", 1, 20.0, 1.0, {}, 2),
        ("downscale factor", 10, 1.0, 1.0, {}, 8),
        ("downscale factor exact", 4, 1.0, 1.0, {}, 3),
        ("downscale -1 beats ceil(3*0.75)=3", 3, 0.0, 1.0, {}, 2),
        ("custom factors", 10, 100.0, 1.0, {"max_upscale_factor": 3.0}, 30),
        ("custom down factor", 10, 0.0, 1.0, {"max_downscale_factor": 0.25}, 3),
        # clamp to [min_replicas, max_replicas]
        ("clamp to max", 4, 20.0, 1.0, {"max_replicas": 5}, 5),
        ("clamp to min", 3, 0.0, 1.0, {"min_replicas": 3}, 3),
        ("pipeline keeps one replica with min 0", 1, 0.0, 1.0, {"min_replicas": 0, "scale_to_zero_after": 1e6}, 1),
        ("above max comes down", 12, 12.0, 1.0, {"max_replicas": 10}, 10),
    ],
)
def test_cortex_rules(
    rule: str, current: int, avg_in_flight: float, target: float, overrides: dict[str, Any], expected: int
) -> None:
    cfg = config(**{**CORTEX_ONLY, **overrides})
    d = decide(cfg, target, flat(avg_in_flight, 100.0), current, old_state(100.0), 100.0)
    assert d.desired == expected, (rule, d.reason["summary"])
    assert d.reason["window"]["avg_in_flight"] == pytest.approx(avg_in_flight)


def test_reason_records_every_step() -> None:
    d = decide(config(**CORTEX_ONLY), 1.0, flat(10.4, 100.0), 10, old_state(100.0), 100.0)
    r = d.reason
    assert r["raw_recommendation"] == pytest.approx(10.4)
    assert r["ceil_raw"] == 11
    assert r["tolerance"] == {"lower": 9.5, "upper": pytest.approx(10.5), "held": True, "recommendation": 10}
    assert r["factor_limits"]["floor"] == 8 and r["factor_limits"]["ceiling"] == 15
    assert r["clamp"] == {"min": 1, "max": 100, "recommendation": 10}
    assert r["stabilization"]["request"] == 10
    assert r["desired"] == 10 and r["action"] == "hold"
    assert "tolerance" in r["summary"]
    json.dumps(r, allow_nan=False)


# --- stabilization ---------------------------------------------------------------------------------------


def test_downscale_waits_for_the_highest_recommendation_to_age_out() -> None:
    cfg = config(window=1.0, panic_threshold=NO_PANIC)  # window 1 s: raw = the latest sample
    drv = Driver(cfg, replicas=10)
    drv.run(10.0, 400)
    drv.run(5.0, 700)
    # The last recommendation of 10 is at t=399; it counts through t=699 (inclusive, like Cortex).
    # The first step down is factor-limited: min(9, ceil(10*0.75)) = 8, and the 8 recorded at t=700
    # (still computed against 10 replicas) holds the next step until t=1001.
    assert drv.changes() == [(700.0, 10, 8), (1001.0, 8, 6)]


def test_upscale_waits_for_the_lowest_recommendation_to_age_out() -> None:
    cfg = config(window=1.0, upscale_stabilization_period=60.0, panic_threshold=NO_PANIC)
    drv = Driver(cfg, replicas=2)
    drv.run(2.0, 100)
    drv.run(4.0, 100)
    assert drv.changes()[0] == (160.0, 2, 3)
    held = drv.log[159][2].reason
    assert held["stabilization"]["upscale_ceiling"] == 2 and held["desired"] == 2


def test_no_downscale_before_the_autoscaler_has_lived_one_period() -> None:
    drv = Driver(config(window=1.0, panic_threshold=NO_PANIC), replicas=10)
    drv.run(1.0, 301)
    assert drv.changes() == [(300.0, 10, 8)]
    assert "lived" in drv.log[299][2].reason["stabilization"]["held_by"]


def test_no_upscale_before_the_autoscaler_has_lived_one_upscale_period() -> None:
    drv = Driver(config(window=1.0, upscale_stabilization_period=30.0, panic_threshold=NO_PANIC), replicas=2)
    drv.run(3.0, 31)
    assert drv.changes() == [(30.0, 2, 3)]


def test_downscale_floor_is_capped_at_current_replicas() -> None:
    # An old high recommendation (20) must not turn a scale-down into a scale-up (Cortex v0.42).
    state = AutoscalerState(recommendations=((90.0, 20),), started_s=-10_000.0)
    d = decide(config(panic_threshold=NO_PANIC), 1.0, flat(1.0, 100.0), 10, state, 100.0)
    assert d.desired == 10
    assert d.reason["stabilization"]["downscale_floor"] == 10


def test_upscale_ceiling_is_floored_at_current_replicas() -> None:
    state = AutoscalerState(recommendations=((90.0, 1),), started_s=-10_000.0)
    cfg = config(upscale_stabilization_period=60.0, panic_threshold=NO_PANIC)
    d = decide(cfg, 1.0, flat(8.0, 100.0), 4, state, 100.0)
    assert d.desired == 4
    assert d.reason["stabilization"]["upscale_ceiling"] == 4


def test_history_keeps_only_the_longest_period() -> None:
    drv = Driver(config(window=1.0, downscale_stabilization_period=30.0, panic_threshold=NO_PANIC), replicas=1)
    drv.run(1.0, 100)
    times = [t for t, _ in drv.state.recommendations]
    assert min(times) == 99.0 - 30.0 and max(times) == 99.0


# --- panic mode -----------------------------------------------------------------------------------------


def test_panic_scales_past_the_factor_limits_at_once() -> None:
    drv = Driver(config(), replicas=2)
    drv.run(2.0, 120)
    before = drv.replicas
    decisions = drv.run(40.0, 6)
    panic = next(d for d in decisions if d.reason["panic"]["active"])
    assert panic.desired > math.ceil(before * 1.5)  # more than one factor-limited step
    assert panic.reason["panic"]["over_threshold"] is True
    assert drv.replicas >= 20
    json.dumps(panic.reason, allow_nan=False)


def test_panic_is_clamped_to_max_replicas() -> None:
    drv = Driver(config(max_replicas=7), replicas=2)
    drv.run(2.0, 120)
    drv.run(100.0, 10)
    assert drv.replicas == 7
    assert max(d.desired for _, _, d in drv.log) == 7


def test_no_scale_down_while_panicking_and_panic_ends_after_a_full_window() -> None:
    cfg = config()
    drv = Driver(cfg, replicas=2)
    drv.run(2.0, 400)
    drv.run(30.0, 8)
    last_over = max(t for t, _, d in drv.log if d.reason["panic"]["over_threshold"])
    drv.run(0.5, 120)
    panicking = [(t, before, d) for t, before, d in drv.log if d.reason["panic"]["active"]]
    assert all(d.desired >= before for _, before, d in panicking)
    assert panicking[-1][2].desired == 30
    # KPA: still panicking at last_over + window, not one tick later.
    assert panicking[-1][0] == last_over + cfg.window
    after = next(d for t, _, d in drv.log if t == last_over + cfg.window + 1)
    assert after.reason["panic"]["active"] is False and after.state.panic_until_s is None


def test_panic_level_is_held_by_downscale_stabilization_after_panic() -> None:
    drv = Driver(config(), replicas=2)
    drv.run(2.0, 400)
    drv.run(30.0, 8)
    peak = drv.replicas
    drv.run(0.5, 240)  # panic over after ~1 minute, downscale period 5 minutes
    assert drv.replicas == peak


def test_panic_holds_through_a_gap_in_the_panic_window() -> None:
    drv = Driver(config(), replicas=2)
    drv.run(2.0, 120)
    drv.run(30.0, 6)
    peak = drv.replicas
    # No sample in the last 6 s, but some in the 60 s window: panic persists, nothing goes down.
    d = decide(drv.cfg, 1.0, list(drv.samples), drv.replicas, drv.state, drv.now_s + 10)
    assert d.reason["panic"]["active"] is True and d.reason["panic"]["avg_in_flight"] is None
    assert d.desired == peak
    json.dumps(d.reason, allow_nan=False)


def test_no_panic_below_threshold() -> None:
    drv = Driver(config(), replicas=4)
    drv.run(4.0, 120)
    drv.run(7.9, 6)  # under 2 x 4 over the 6 s window
    assert not any(d.reason["panic"]["active"] for _, _, d in drv.log)


# --- scale to zero --------------------------------------------------------------------------------------


def test_scale_to_zero_after_idle_period() -> None:
    drv = Driver(config(min_replicas=0), replicas=1)
    drv.run(1.0, 100)
    drv.run(0.0, 400)
    # Last busy sample at t=99; idle for scale_to_zero_after (300 s) at t=399.
    assert drv.changes() == [(399.0, 1, 0)]
    assert drv.log[399][2].reason["scale_to_zero"]["applied"] is True


def test_scale_to_zero_needs_min_replicas_zero() -> None:
    drv = Driver(config(min_replicas=1), replicas=1)
    drv.run(0.0, 1000)
    assert drv.changes() == []


def test_scale_to_zero_only_once_the_pipeline_is_down_to_one() -> None:
    drv = Driver(config(min_replicas=0, window=1.0), replicas=3)
    drv.run(3.0, 400)
    drv.run(0.0, 700)
    # Idle since t=400, but 3 -> 2 waits for downscale stabilization (t=700), and 2 -> 1 another period;
    # the step that would reach one goes straight to zero.
    assert drv.changes() == [(700.0, 3, 2), (1001.0, 2, 0)]


def test_scale_to_zero_counts_idle_from_first_tick_when_never_busy() -> None:
    drv = Driver(config(min_replicas=0, scale_to_zero_after=30.0), replicas=1)
    drv.run(0.0, 31)
    assert drv.changes() == [(30.0, 1, 0)]


def test_wake_from_zero_at_once_without_stabilization() -> None:
    cfg = config(min_replicas=0, upscale_stabilization_period=120.0)
    drv = Driver(cfg, replicas=0)
    drv.run(0.0, 30)
    assert drv.replicas == 0
    d = drv.tick(3.0)  # three requests held at the gateway
    assert d.desired == 1 and d.reason["wake_from_zero"]["demand"] is True
    drv.run(3.0, 10)
    assert drv.replicas == 3  # panic from one replica, the upscale period does not apply


def test_zero_replicas_with_min_above_zero_goes_to_min() -> None:
    d = decide(config(min_replicas=2), 1.0, flat(0.0, 10.0), 0, AutoscalerState(), 10.0)
    assert d.desired == 2


# --- edge cases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [[], [(10.0, 5.0)], [(200.0, 5.0)]])
def test_no_samples_in_window_holds(samples: list[tuple[float, float]]) -> None:
    d = decide(config(), 1.0, samples, 3, AutoscalerState(), 100.0)
    assert d.desired == 3
    assert "no in-flight samples" in d.reason["summary"]
    assert d.state.started_s == 100.0


def test_no_samples_still_clamps_to_bounds() -> None:
    d = decide(config(min_replicas=2, max_replicas=4), 1.0, [], 6, AutoscalerState(), 0.0)
    assert d.desired == 4


def test_gaps_average_the_samples_present() -> None:
    samples = [(40.0, 2.0), (41.0, 4.0), (99.0, 6.0), (100.0, 8.0)]  # one minute with a long gap
    d = decide(config(**CORTEX_ONLY), 1.0, samples, 5, old_state(100.0), 100.0)
    assert d.reason["window"] == {"samples": 3, "avg_in_flight": 6.0}
    assert d.desired == 6


def test_tiny_target_stays_finite_and_factor_limited() -> None:
    d = decide(config(**CORTEX_ONLY), 1e-300, flat(5.0, 100.0), 4, old_state(100.0), 100.0)
    assert d.desired == 6
    json.dumps(d.reason, allow_nan=False)


@pytest.mark.parametrize(
    ("target", "samples", "current"),
    [(0.0, [], 1), (math.nan, [], 1), (1.0, [(1.0, -1.0)], 1), (1.0, [(1.0, math.inf)], 1), (1.0, [], -1)],
)
def test_invalid_inputs_raise(target: float, samples: list[tuple[float, float]], current: int) -> None:
    with pytest.raises(ThriftyError):
        decide(config(), target, samples, current, AutoscalerState(), 10.0)


def test_decide_is_pure() -> None:
    samples = flat(7.0, 100.0)
    state = AutoscalerState(recommendations=((95.0, 3),), started_s=0.0)
    a = decide(config(), 1.0, samples, 3, state, 100.0)
    b = decide(config(), 1.0, samples, 3, state, 100.0)
    assert a == b
    assert samples == flat(7.0, 100.0) and state.recommendations == ((95.0, 3),)


# --- whole-system properties on the virtual clock ---------------------------------------------------


def periodic_load(mean: float, t: float, rng: random.Random) -> float:
    """A 2-minute sine of +-10% around `mean`, times +-20% uniform noise."""
    return mean * (1 + 0.1 * math.sin(2 * math.pi * t / 120.0)) * rng.uniform(0.8, 1.2)


@pytest.mark.parametrize("mean", [0.9, 2.5, 9.0, 9.6, 24.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_flapping_under_steady_noisy_load(mean: float, seed: int) -> None:
    rng = random.Random(seed)
    drv = Driver(config(), replicas=max(1, math.ceil(mean)))
    drv.prefill(lambda t: periodic_load(mean, t, rng), 60)
    for _ in range(300):  # settle, so the first-period guard does not hide flapping
        drv.tick(periodic_load(mean, drv.now_s, rng))
    settled = len(drv.log)
    for _ in range(600):
        drv.tick(periodic_load(mean, drv.now_s, rng))
    downs = [c for c in drv.changes() if c[0] >= settled and c[2] < c[1]]
    assert len(downs) <= 1, downs


def test_step_to_four_times_the_load_is_decided_within_five_seconds() -> None:
    drv = Driver(config(), replicas=2)
    drv.run(2.0, 600)
    step_s = drv.now_s
    drv.run(8.0, 120)
    first_up = next(t for t, before, d in drv.log if t >= step_s and d.desired > before)
    assert first_up - step_s <= 5.0
    assert drv.replicas >= 8


def test_history_windows_by_bisection_equal_the_plain_filters() -> None:
    rng = random.Random(3)
    cfg = AutoscalingConfig(downscale_stabilization_period=5.0, upscale_stabilization_period=2.0)
    for _ in range(2000):
        t, history = rng.uniform(0, 10), list[tuple[float, int]]()
        for _ in range(rng.randrange(0, 12)):
            t += rng.choice((0.0, 0.1, 0.3, 1.0, 0.7))
            history.append((t, rng.randrange(0, 9)))
        if rng.random() < 0.1:
            rng.shuffle(history)  # out of order: the filters run as they are
        h = tuple(history)
        now = t + rng.choice((0.0, 0.3, 2.0, 5.0, 5.1))
        assert _prune(h, cfg, now) == tuple((a, r) for a, r in h if now - a <= 5.0)
        since = now - rng.choice((0.0, 2.0, 5.0, 0.3))
        for pick in (max, min):
            recs = [r for a, r in h if a >= since]
            assert _extreme_since(h, since, pick) == (pick(recs) if recs else None)
