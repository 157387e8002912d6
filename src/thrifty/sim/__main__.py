"""``python -m thrifty.sim SCENARIO --out DIR``: run a scenario's strategies and write the report.

The CLI's ``thrifty simulate`` will call :func:`simulate`; this entry point exits only through ``main``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from thrifty.config.scenario import ScenarioConfig, load_scenario, trace_path
from thrifty.errors import ThriftyError
from thrifty.sim.control import ControlPlane, OperatorControlPlane
from thrifty.sim.report import write_report
from thrifty.sim.run import RunResult, Simulation
from thrifty.sim.traffic import arrivals_for

STRATEGIES = ("thrifty", "static-peak")


def control_for(strategy: str, scenario: ScenarioConfig) -> ControlPlane:
    """``thrifty``: the autoscaler as configured; ``static-peak``: every API at its max_replicas all day."""
    if strategy == "thrifty":
        return OperatorControlPlane(scenario)
    if strategy == "static-peak":
        peak = [a.model_copy(update={"autoscaling": a.autoscaling.model_copy(update={
            "min_replicas": a.autoscaling.max_replicas})}) for a in scenario.apis]  # fmt: skip
        return OperatorControlPlane(scenario.model_copy(update={"apis": peak}))
    raise ThriftyError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}", details={})


def simulate(file: Path, out: Path, strategies: tuple[str, ...] = STRATEGIES, quiet: bool = False,
             duration_s: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    scenario = load_scenario(file)
    if duration_s is not None:
        scenario = scenario.model_copy(update={"duration": duration_s})
    arrivals = arrivals_for(scenario, trace_path(file, scenario))
    runs: list[RunResult] = []
    for name in strategies:
        started = time.perf_counter()

        def progress(share: float, name: str = name) -> None:
            if not quiet:
                print(f"\r{name}: {100 * share:5.1f}%", end="", file=sys.stderr, flush=True)

        runs.append(Simulation(scenario, arrivals, control_for(name, scenario), name, progress).run())
        if not quiet:
            print(f"\r{name}: done in {time.perf_counter() - started:.1f}s ({len(arrivals)} requests)",
                  file=sys.stderr)  # fmt: skip
    return write_report(scenario, runs, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.sim", description=__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=Path("sim-report"))
    parser.add_argument("--strategy", action="append", choices=STRATEGIES, help="repeatable; default: all")
    parser.add_argument("--duration", type=float, default=None, help="override the scenario's duration (seconds)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        simulate(args.scenario, args.out, tuple(args.strategy or STRATEGIES), args.quiet, args.duration)
    except ThriftyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
