"""``thrifty simulate SCENARIO --out DIR``: the cost simulator, and the scenario check ``thrifty validate`` uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from thrifty.config.scenario import load_scenario
from thrifty.sim.strategies import STRATEGIES

SCENARIO_KEYS = frozenset({"service", "traffic", "slo"})  # keys only a scenario file has


def looks_like_scenario(data: Any) -> bool:
    return isinstance(data, dict) and bool(SCENARIO_KEYS & set(data))


def validate_scenario(path: str, output: str) -> None:
    sc = load_scenario(path)
    if output == "json":
        click.echo(json.dumps({"file": path, "kind": "scenario", "valid": True,
                                             "config": sc.model_dump(mode="json", by_alias=True)}))  # fmt: skip
        return
    apis = ", ".join(a.name for a in sc.apis)
    click.echo(f"{path}: valid scenario {sc.name!r} ({sc.duration:g} s, APIs: {apis}, "
               f"{len(sc.cluster.node_pools)} pools)")  # fmt: skip


def _progress(label: str, share: float) -> None:
    end = "\n" if share >= 1.0 else ""
    click.echo(f"\r{label}: {100 * share:5.1f}%", nl=False, err=True)
    if end:
        click.echo("", err=True)
    sys.stderr.flush()


@click.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", default="sim-report", type=click.Path(file_okay=False), help="Report folder.")
@click.option("--strategy", "strategies", multiple=True, type=click.Choice(tuple(STRATEGIES)),
              help="Repeatable; default: every strategy.")  # fmt: skip
@click.option("--duration", type=float, default=None, help="Override the scenario's duration (seconds).")
@click.option("--no-sweep", is_flag=True, help="Each strategy at its configured knob only (no equal-service sweep).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Simulations run at once, in worker processes (one per core is the most that helps).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress.")
def simulate(scenario: str, out: str, strategies: tuple[str, ...], duration: float | None, no_sweep: bool,
             jobs: int, quiet: bool) -> None:  # fmt: skip
    """Replay a scenario's traffic through the operator on a virtual clock; report cost and service per strategy."""
    from thrifty.sim.__main__ import simulate as run

    run(Path(scenario), Path(out), strategies or tuple(STRATEGIES), quiet, duration, not no_sweep,
        None if quiet else _progress, jobs)  # fmt: skip
    click.echo((Path(out) / "report.md").read_text(encoding="utf-8"))


COMMANDS = [simulate]
