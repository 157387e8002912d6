"""`thrifty cluster info|events`: the nodes the platform holds, what they cost, and why they came and went."""

from __future__ import annotations

from typing import Any

import click

from thrifty.cli.apis import OUTPUT, client_of
from thrifty.cli.output import age, cluster_cost_line, dollars, print_json, table

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
    per_api = data["cost"]["by_api_per_hour"]
    if per_api:
        out.append("by API: " + ", ".join(f"{api} {dollars(v)}/h" for api, v in per_api.items()))
    click.echo("\n\n".join(out[:2]) + "\n\n" + "\n".join(out[2:]))


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
