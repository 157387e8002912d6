"""Simulator speed: simulated requests per second of wall time, and the time for a scenario's duration.

    .venv/bin/python benchmarks/simulator/speed.py [SCENARIO] [--hours H]

Runs the thrifty strategy of the scenario (default examples/scenarios/gpu-1000-models.yaml) for H simulated
hours (default 24) and prints the time to generate the traffic, the time to simulate it and the rate, and how
much of that the control ticks (the operator's reconcile steps) took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from thrifty.config.scenario import load_scenario, trace_path
from thrifty.sim.control import Actions, Observation, OperatorControlPlane
from thrifty.sim.run import Simulation
from thrifty.sim.traffic import arrivals_for

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", type=Path, nargs="?", default=ROOT / "examples/scenarios/gpu-1000-models.yaml")
    p.add_argument("--hours", type=float, default=24.0)
    args = p.parse_args()
    sc = load_scenario(args.scenario).model_copy(update={"duration": args.hours * 3600.0})
    t0 = time.perf_counter()
    arrivals = arrivals_for(sc, trace_path(args.scenario, sc))
    t1 = time.perf_counter()
    control = OperatorControlPlane(sc)
    ticks = [0, 0.0]
    tick = control.tick

    def timed_tick(now_s: float, obs: Observation) -> Actions:
        t = time.perf_counter()
        try:
            return tick(now_s, obs)
        finally:
            ticks[0] += 1
            ticks[1] += time.perf_counter() - t

    control.tick = timed_tick  # type: ignore[method-assign]
    Simulation(sc, arrivals, control, "thrifty").run()
    t2 = time.perf_counter()
    print(f"scenario {sc.name}: {args.hours:g} simulated hours, {len(arrivals)} requests")
    print(f"traffic generated in {t1 - t0:.1f}s; simulated in {t2 - t1:.1f}s "
          f"= {len(arrivals) / (t2 - t1):,.0f} simulated requests/s")  # fmt: skip
    print(f"control ticks: {ticks[0]} in {ticks[1]:.1f}s ({ticks[1] / max(1, ticks[0]) * 1e3:.2f} ms each); "
          f"data plane and world: {t2 - t1 - ticks[1]:.1f}s")  # fmt: skip


if __name__ == "__main__":
    main()
