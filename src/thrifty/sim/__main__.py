"""``python -m thrifty.sim SCENARIO --out DIR``: run a scenario's strategies and write the report.

``thrifty simulate`` calls :func:`simulate`; this entry point exits only through ``main``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from thrifty.config.scenario import ScenarioConfig, load_scenario, trace_path
from thrifty.errors import ThriftyError
from thrifty.sim.report import summarize, write_rows
from thrifty.sim.run import Simulation
from thrifty.sim.strategies import STRATEGIES, Knob
from thrifty.sim.traffic import Arrivals, arrivals_for

Progress = Callable[[str, float], None]


def _stderr_progress(label: str, share: float) -> None:
    end = "\n" if share >= 1.0 else ""
    print(f"\r{label}: {100 * share:5.1f}%", end=end, file=sys.stderr, flush=True)


def simulate(file: Path, out: Path, strategies: tuple[str, ...] = tuple(STRATEGIES), quiet: bool = False,
             duration_s: float | None = None, sweep: bool = True,
             progress: Progress | None = None, jobs: int = 1) -> list[dict[str, Any]]:  # fmt: skip
    """Run each strategy at each value of its knob (``sweep``; else the configured value only), keep the
    cheapest run that meets the SLO (or the best attainment where none does), and write the report.

    ``jobs`` > 1 runs that many simulations at once in worker processes (each run is independent and
    deterministic, so the report is the same as with one); progress is then one line per finished run."""
    for name in strategies:
        if name not in STRATEGIES:
            raise ThriftyError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}", details={})
    if jobs < 1:
        raise ThriftyError(f"jobs must be >= 1, got {jobs}", details={"jobs": jobs})
    scenario = load_scenario(file)
    if duration_s is not None:
        scenario = scenario.model_copy(update={"duration": duration_s})
    arrivals = arrivals_for(scenario, trace_path(file, scenario))
    show = progress if progress is not None else (None if quiet else _stderr_progress)
    tasks = [
        (name, knob) for name in strategies for knob in (STRATEGIES[name].knobs(scenario) if sweep else (Knob(1.0),))
    ]
    if jobs == 1 or len(tasks) == 1:
        done = [_run_one(scenario, arrivals, name, value, show) for name, value in tasks]
    else:
        done = _run_parallel(scenario, arrivals, tasks, jobs, show)
    chosen: dict[str, tuple[tuple[bool, float], dict[str, Any], list[dict[str, Any]]]] = {}
    sweeps: dict[str, list[dict[str, Any]]] = {name: [] for name in strategies}
    for (name, knob), (row, timeline, wall) in zip(tasks, done, strict=True):
        sweeps[name].append({"knob": STRATEGIES[name].knob, "value": knob.factor, "label": knob.label,
                             "keep_warm": knob.keep_warm, "total_dollars": row["total_dollars"],
                             "slo_attainment_percent": row["slo_attainment_percent"], "slo_met": row["slo_met"],
                             "wall_s": round(wall, 1)})  # fmt: skip
        key = (row["slo_met"], -row["total_dollars"] if row["slo_met"] else row["slo_attainment_percent"])
        if name not in chosen or key > chosen[name][0]:
            chosen[name] = (key, row, timeline)
    rows = [chosen[name][1] for name in strategies]
    timelines = {name: chosen[name][2] for name in strategies}
    return write_rows(scenario, rows, timelines, out, sweeps)


Done = tuple[dict[str, Any], list[dict[str, Any]], float]  # (summary row, timeline, wall seconds)


def _run_one(scenario: ScenarioConfig, arrivals: Arrivals, name: str, knob: Knob,
             show: Progress | None) -> Done:  # fmt: skip
    strategy = STRATEGIES[name]
    setup = strategy.setup(scenario, knob)
    label = f"{name} ({strategy.knob} = {knob.label})"
    started = time.perf_counter()

    def tick(share: float) -> None:
        if show is not None:
            show(label, share)

    run = Simulation(setup.scenario, arrivals, setup.control(setup.scenario), name, tick,
                     plain_model_cache=setup.plain_model_cache).run()  # fmt: skip
    tick(1.0)
    run.knob = f"{strategy.knob} = {knob.label}"
    return summarize(scenario, run), run.timeline, time.perf_counter() - started


_WORK: tuple[ScenarioConfig, Arrivals] | None = None  # what forked workers inherit instead of a pickled copy


def _worker(task: tuple[str, Knob]) -> Done:
    assert _WORK is not None
    return _run_one(*_WORK, task[0], task[1], None)


def _run_parallel(scenario: ScenarioConfig, arrivals: Arrivals, tasks: list[tuple[str, Knob]], jobs: int,
                  show: Progress | None) -> list[Done]:  # fmt: skip
    global _WORK
    _WORK = (scenario, arrivals)
    try:
        ctx = multiprocessing.get_context("fork")  # the arrival arrays are shared, not copied per run
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker, t): i for i, t in enumerate(tasks)}
            results: list[Done | None] = [None] * len(tasks)
            for n, fut in enumerate(as_completed(futures), 1):
                i = futures[fut]
                results[i] = one = fut.result()
                if show is not None:
                    name, knob = tasks[i]
                    show(f"[{n}/{len(tasks)}] {name} ({STRATEGIES[name].knob} = {knob.label}) in {one[2]:.0f}s", 1.0)
    finally:
        _WORK = None
    return [r for r in results if r is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrifty.sim", description=__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=Path("sim-report"))
    parser.add_argument("--strategy", action="append", choices=tuple(STRATEGIES), help="repeatable; default: all")
    parser.add_argument("--duration", type=float, default=None, help="override the scenario's duration (seconds)")
    parser.add_argument("--no-sweep", action="store_true", help="each strategy at its configured knob only")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="simulations run at once (default 1)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        simulate(args.scenario, args.out, tuple(args.strategy or STRATEGIES), args.quiet, args.duration,
                 not args.no_sweep, jobs=args.jobs)  # fmt: skip
    except ThriftyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
