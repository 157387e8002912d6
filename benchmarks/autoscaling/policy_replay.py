"""Replay load shapes through the autoscaling policy on a virtual clock (no platform, no sleeping).

    .venv/bin/python benchmarks/autoscaling/policy_replay.py [--json] [--seeds N]

(a) step: low load, then 4x; seconds from the step to the first scale-up decision and to the decision that
    reaches the needed replicas, with thrifty's defaults (1 s samples) and Cortex's (window 60 s, upscale
    stabilization 1 m, 10 s samples, no panic mode).
(b) no flapping: scale-down events over 10 minutes of steady periodic load with +-20% noise.

The load is the API-wide in-flight count itself (exogenous: it does not react to the replica count), and
every decision takes effect at once. The live benchmark imports ``replay``, ``replay_step`` and
``replay_steady`` from here so both report the policy the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thrifty.config.schema import AutoscalingConfig
from thrifty.policy.autoscaling import CORTEX_DEFAULTS, NO_PANIC_THRESHOLD, AutoscalerState, decide

Load = Callable[[float], float]  # virtual time (s) -> API-wide in-flight requests


def thrifty_config(**overrides: Any) -> AutoscalingConfig:
    return AutoscalingConfig(**overrides)


def cortex_config(**overrides: Any) -> AutoscalingConfig:
    """Cortex's defaults (cortex.md section 1a): the fields thrifty changed are set back."""
    return AutoscalingConfig(**{**CORTEX_DEFAULTS, **overrides})


@dataclass(frozen=True)
class Tick:
    t_s: float
    in_flight: float
    replicas_before: int
    desired: int
    panic: bool
    summary: str


def replay(
    cfg: AutoscalingConfig,
    target_in_flight: float,
    load: Load,
    *,
    initial_replicas: int,
    duration_s: float,
    sample_period_s: float = 1.0,
    prefill_s: float = 0.0,
) -> list[Tick]:
    """Tick every ``sample_period_s`` from t=0, each tick taking one sample of ``load`` first.

    ``prefill_s`` seconds of samples from before t=0 are passed too, as an operator that kept its metrics
    would, so averages start warm instead of from a single sample.
    """
    keep_s = max(cfg.window, cfg.panic_window)
    samples: deque[tuple[float, float]] = deque()
    n_prefill = int(prefill_s / sample_period_s)
    for k in range(n_prefill, 0, -1):
        samples.append((-k * sample_period_s, load(-k * sample_period_s)))
    state, replicas, ticks = AutoscalerState(), initial_replicas, []
    for i in range(int(duration_s / sample_period_s)):
        now_s = i * sample_period_s
        samples.append((now_s, load(now_s)))
        while samples[0][0] <= now_s - keep_s:
            samples.popleft()
        d = decide(cfg, target_in_flight, list(samples), replicas, state, now_s)
        ticks.append(Tick(now_s, samples[-1][1], replicas, d.desired, d.reason["panic"]["active"], d.reason["summary"]))
        replicas, state = d.desired, d.state
    return ticks


def step_load(low: float, high: float, step_at_s: float) -> Load:
    # The step lands just after the sample at step_at_s: the delay includes one full sampling period.
    return lambda t: high if t > step_at_s else low


def periodic_load(mean: float, rng: random.Random, *, amplitude: float, period_s: float, noise: float) -> Load:
    """A sine of +-amplitude around ``mean``, times uniform +-noise drawn per sample."""
    return lambda t: mean * (1 + amplitude * math.sin(2 * math.pi * t / period_s)) * rng.uniform(1 - noise, 1 + noise)


def replay_step(
    cfg: AutoscalingConfig,
    target_in_flight: float,
    sample_period_s: float,
    *,
    low_in_flight: float = 2.0,
    factor: float = 4.0,
    warmup_s: float = 600.0,
    after_s: float = 600.0,
) -> dict[str, Any]:
    """Steady low load for ``warmup_s`` (past every first-period guard), then ``factor`` x the load."""
    high = low_in_flight * factor
    before = max(cfg.min_replicas, math.ceil(low_in_flight / target_in_flight))
    needed = min(cfg.max_replicas, math.ceil(high / target_in_flight))
    ticks = replay(
        cfg,
        target_in_flight,
        step_load(low_in_flight, high, warmup_s),
        initial_replicas=before,
        duration_s=warmup_s + after_s,
        sample_period_s=sample_period_s,
        prefill_s=cfg.window,
    )
    after = [tk for tk in ticks if tk.t_s > warmup_s]
    first_up = next((tk.t_s - warmup_s for tk in after if tk.desired > tk.replicas_before), None)
    reached = next((tk.t_s - warmup_s for tk in after if tk.desired >= needed), None)
    return {
        "sample_period_s": sample_period_s,
        "low_in_flight": low_in_flight,
        "high_in_flight": high,
        "replicas_before": ticks[int(warmup_s / sample_period_s)].desired,
        "replicas_needed": needed,
        "first_scale_up_s": first_up,
        "reached_needed_s": reached,
        "scale_up_events": sum(tk.desired > tk.replicas_before for tk in after),
        "panicked": any(tk.panic for tk in after),
        "replicas_end": ticks[-1].desired,
    }


def replay_steady(
    cfg: AutoscalingConfig,
    target_in_flight: float,
    *,
    mean_in_flight: float,
    seed: int = 0,
    noise: float = 0.2,
    amplitude: float = 0.1,
    period_s: float = 120.0,
    settle_s: float = 300.0,
    duration_s: float = 600.0,
    sample_period_s: float = 1.0,
) -> dict[str, Any]:
    """Scale events over ``duration_s`` of steady periodic load, counted after ``settle_s``.

    The settle phase outlasts the downscale stabilization period, during which Cortex's rules block every
    scale-down; counting it would hide flapping, not show it.
    """
    load = periodic_load(mean_in_flight, random.Random(seed), amplitude=amplitude, period_s=period_s, noise=noise)
    ticks = replay(
        cfg,
        target_in_flight,
        load,
        initial_replicas=max(cfg.min_replicas, 1, math.ceil(mean_in_flight / target_in_flight)),
        duration_s=settle_s + duration_s,
        sample_period_s=sample_period_s,
        prefill_s=cfg.window,
    )
    counted = [tk for tk in ticks if tk.t_s >= settle_s]
    return {
        "mean_in_flight": mean_in_flight,
        "seed": seed,
        "scale_down_events": sum(tk.desired < tk.replicas_before for tk in counted),
        "scale_up_events": sum(tk.desired > tk.replicas_before for tk in counted),
        "replicas_min": min(tk.desired for tk in counted),
        "replicas_max": max(tk.desired for tk in counted),
    }


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per load level in the flapping check")
    args = parser.parse_args()
    target = 1.0

    steps = {
        "thrifty (1 s samples)": replay_step(thrifty_config(), target, 1.0),
        "thrifty, panic off": replay_step(thrifty_config(panic_threshold=NO_PANIC_THRESHOLD), target, 1.0),
        "cortex (10 s samples)": replay_step(cortex_config(), target, 10.0),
    }
    t_first = steps["thrifty (1 s samples)"]["first_scale_up_s"]
    c_first = steps["cortex (10 s samples)"]["first_scale_up_s"]
    ratio = c_first / t_first if t_first and c_first else None

    means = [1.5, 4.2, 9.6, 19.5, 50.0]
    steady: dict[str, list[dict[str, Any]]] = {}
    for name, cfg in (("thrifty", thrifty_config()), ("cortex", cortex_config())):
        period = 1.0 if name == "thrifty" else 10.0
        steady[name] = [
            replay_steady(cfg, target, mean_in_flight=m, seed=s, sample_period_s=period)
            for m in means
            for s in range(args.seeds)
        ]

    if args.json:
        print(json.dumps({"step": steps, "step_ratio": ratio, "steady": steady}, indent=2))
        return

    first = next(iter(steps.values()))
    low, high, needed = first["low_in_flight"], first["high_in_flight"], first["replicas_needed"]
    print(f"(a) step from {low:g} to {high:g} in-flight, target_in_flight {target:g}: {needed} replicas needed")
    print(f"{'settings':<24}{'first scale-up':>16}{f'reached {needed}':>12}{'up events':>11}{'panic':>7}")
    for name, res in steps.items():
        print(
            f"{name:<24}{_fmt(res['first_scale_up_s']):>16}{_fmt(res['reached_needed_s']):>12}"
            f"{res['scale_up_events']:>11}{'yes' if res['panicked'] else 'no':>7}"
        )
    print(f"first scale-up decision: cortex / thrifty = {ratio:g}x" if ratio else "ratio: n/a")
    print()
    print("(b) steady periodic load (+-10% sine, 2 min period, +-20% noise), 10 min after 5 min settle,")
    print(f"    {args.seeds} seeds per level; scale-down events: max over seeds (mean)")
    print(f"{'mean in-flight':<16}" + "".join(f"{m:>14g}" for m in means))
    for name, results in steady.items():
        cells = []
        for m in means:
            downs = [r["scale_down_events"] for r in results if r["mean_in_flight"] == m]
            cells.append(f"{max(downs)} ({sum(downs) / len(downs):.2f})")
        print(f"{name:<16}" + "".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
