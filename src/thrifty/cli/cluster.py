"""`thrifty cluster info|events`: the nodes the platform holds, what they cost, and why they came and went."""

from __future__ import annotations

from typing import Any

import click

from thrifty.cli.apis import OUTPUT, client_of
from thrifty.cli.output import age, cluster_cost_line, dollars, print_json, table
from thrifty.config.units import parse_duration

GIB = 2**30


def _used(pair: dict[str, Any], scale: float = 1.0, unit: str = "") -> str:
    return f"{pair['used'] / scale:g}/{pair['total'] / scale:g}{unit}"


def node_rows(info: dict[str, Any]) -> str:
    rows = [
        [
            n["id"],
            n["pool"],
            n["instance_type"],
            n["capacity"],
            n["state"],
            f"{dollars(n['price_per_hour'])}/h",
            _used(n["cpu"]),
            _used({"used": round(n["mem_bytes"]["used"] / GIB, 2), "total": round(n["mem_bytes"]["total"] / GIB, 2)},
                  unit="Gi"),
            _used(n["gpu"]),
            str(len(n["replicas"])),
            age(n["launched_at"]).removesuffix(" ago"),
        ]
        for n in info["nodes"]
    ]  # fmt: skip
    headers = ["NODE", "POOL", "TYPE", "CAPACITY", "STATE", "PRICE", "CPU", "MEM", "GPU", "REPLICAS", "AGE"]
    return table(headers, rows)


@click.group()
def cluster() -> None:
    """The cluster the platform runs on (started with `thrifty up --cluster FILE`)."""


@cluster.command()
@OUTPUT
@click.pass_context
def info(ctx: click.Context, output: str) -> None:
    """The nodes (pool, spot or on-demand, $/h, CPU/memory/GPU reserved and total, age) and the cluster's $/h."""
    data = client_of(ctx).cluster_info()
    if output == "json":
        print_json(data)
        return
    out = [f"engine {data['engine']}, provider {data['provider']}"]
    out.append(node_rows(data) if data["nodes"] else "no nodes")
    if data["pending_replicas"]:
        out.append(f"{data['pending_replicas']} replicas waiting for a node")
    out.append(cluster_cost_line(data["cost"]))
    spot = data.get("spot")
    if spot:
        out.append(spot_line(spot))
    per_api = data["cost"]["by_api_per_hour"]
    if per_api:
        out.append("by API: " + ", ".join(f"{api} {dollars(v)}/h" for api, v in per_api.items()))
    click.echo("\n\n".join(out[:2]) + "\n\n" + "\n".join(out[2:]))


def spot_line(spot: dict[str, Any]) -> str:
    """Spot vs on-demand nodes and what spot saves against the same capacity on demand."""
    line = (
        f"spot: {spot['spot_nodes']} spot and {spot['on_demand_nodes']} on-demand nodes; the spot nodes cost "
        f"{dollars(spot['spot_per_hour'])}/h against {dollars(spot['spot_on_demand_price_per_hour'])}/h on demand: "
        f"spot saves {dollars(spot['savings_per_hour'])}/h"
    )
    if spot.get("draining"):
        line += "; draining " + ", ".join(f"{n} ({k})" for n, k in spot["draining"].items())
    if spot.get("out_of_capacity"):
        line += "; out of capacity: " + ", ".join(spot["out_of_capacity"])
    return line


def _notice(value: str) -> float:
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 30s, 2m, 0): {exc}") from None


@cluster.command()
@click.argument("node")
@click.option("--notice", default="120s", show_default=True, help="Notice before the node goes; 0 = a hard kill.")
@click.pass_context
def preempt(ctx: click.Context, node: str, notice: str) -> None:
    """Reclaim NODE as the spot market would (provider simulated only)."""
    seconds = _notice(notice)
    client_of(ctx).cluster_preempt(node, seconds)
    what = "hard kill: gone now" if seconds <= 0 else f"interruption notice: gone in {seconds:g}s"
    click.echo(f"{node}: {what}")


@cluster.command()
@click.argument("node")
@click.pass_context
def rebalance(ctx: click.Context, node: str) -> None:
    """Post a rebalance recommendation for NODE (provider simulated only)."""
    client_of(ctx).cluster_rebalance(node)
    click.echo(f"{node}: rebalance recommendation posted")


@cluster.command()
@click.argument("pool")
@click.argument("launches")
@click.pass_context
def capacity(ctx: click.Context, pool: str, launches: str) -> None:
    """How many more nodes POOL can give: a number, or `unlimited` (provider simulated only)."""
    if launches == "unlimited":
        n: int | None = None
    elif launches.isdigit():
        n = int(launches)
    else:
        raise click.BadParameter(f"{launches!r}: a whole number >= 0 or `unlimited`", param_hint="LAUNCHES")
    client_of(ctx).cluster_capacity(pool, n)
    click.echo(f"pool {pool}: capacity {launches}")


@cluster.command()
@click.option("--limit", default=50, show_default=True)
@OUTPUT
@click.pass_context
def events(ctx: click.Context, limit: int, output: str) -> None:
    """Node launches, joins, releases, losses and consolidations, each with its reason."""
    evs = client_of(ctx).cluster_events(limit=limit)
    if output == "json":
        print_json(evs)
        return
    click.echo(table(["AGE", "KIND", "MESSAGE"], [[age(e["ts"]), e["kind"], e["message"]] for e in evs]))


COMMANDS = [cluster]
