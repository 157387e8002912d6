"""``python -m thrifty.sim SCENARIO --out DIR``: run a scenario's strategies and write the report.

``thrifty simulate`` calls :func:`simulate`; this entry point exits only through ``main``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thrifty.config.scenario import load_scenario, trace_path
from thrifty.errors import ThriftyError
from thrifty.sim.report import summarize, write_report
from thrifty.sim.run import RunResult, Simulation
from thrifty.sim.strategies import STRATEGIES
from thrifty.sim.traffic import arrivals_for

Progress = Callable[[str, float], None]


def _stderr_progress(label: str, share: float) -> None:
    end = "\n" if share >= 1.0 else ""
    print(f"\r{label}: {100 * share:5.1f}%", end=end, file=sys.stderr, flush=True)


def simulate(file: Path, out: Path, strategies: tuple[str, ...] = tuple(STRATEGIES), quiet: bool = False,
             duration_s: float | None = None, sweep: bool = True,
             progress: Progress | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run each strategy at each value of its knob (``sweep``; else the configured value only), keep the
    cheapest run that meets the SLO (or the best attainment where none does), and write the report."""
    for name in strategies:
        if name not in STRATEGIES:
            raise ThriftyError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}", details={})
    scenario = load_scenario(file)
    if duration_s is not None:
        scenario = scenario.model_copy(update={"duration": duration_s})
    arrivals = arrivals_for(scenario, trace_path(file, scenario))
    show = progress if progress is not None else (None if quiet else _stderr_progress)
    chosen: list[RunResult] = []
    sweeps: dict[str, list[dict[str, Any]]] = {}
    for name in strategies:
        strategy = STRATEGIES[name]
        values = strategy.values(scenario) if sweep else (1.0,)
        best: tuple[tuple[bool, float], RunResult] | None = None
        sweeps[name] = []
        for value in values:
            setup = strategy.setup(scenario, value)
            label = f"{name} ({strategy.knob} = {value:g})"
            started = time.perf_counter()

            def tick(share: float, label: str = label) -> None:
                if show is not None:
                    show(label, share)

            run = Simulation(setup.scenario, arrivals, setup.control(setup.scenario), name, tick,
                             plain_model_cache=setup.plain_model_cache).run()  # fmt: skip
            tick(1.0)
            row = summarize(scenario, run)
            sweeps[name].append({"knob": strategy.knob, "value": value, "total_dollars": row["total_dollars"],
                                 "slo_attainment_percent": row["slo_attainment_percent"], "slo_met": row["slo_met"],
                                 "wall_s": round(time.perf_counter() - started, 1)})  # fmt: skip
            run.knob = f"{strategy.knob} = {value:g}"
            key = (row["slo_met"], -row["total_dollars"] if row["slo_met"] else row["slo_attainment_percent"])
            if best is None or key > best[0]:
                best = (key, run)
        assert best is not None
        chosen.append(best[1])
    return write_report(scenario, chosen, out, sweeps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.sim", description=__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=Path("sim-report"))
    parser.add_argument("--strategy", action="append", choices=tuple(STRATEGIES), help="repeatable; default: all")
    parser.add_argument("--duration", type=float, default=None, help="override the scenario's duration (seconds)")
    parser.add_argument("--no-sweep", action="store_true", help="each strategy at its configured knob only")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        simulate(args.scenario, args.out, tuple(args.strategy or STRATEGIES), args.quiet, args.duration,
                 not args.no_sweep)  # fmt: skip
    except ThriftyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
