"""`thrifty validate` and `thrifty schema`: work on files, no platform needed.

Both handle the two kinds of file: a project's thrifty.yaml and the platform's cluster file. ``--cluster``
says which; without it, ``validate`` treats a file as a cluster file when its top level has no ``apis`` or
``splitters`` and has a cluster-only key (engine, provider, node_pools, ...), so
``thrifty validate cluster.yaml`` just works. A folder is always a project.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from thrifty.cli.output import print_json, table
from thrifty.cli.simulate import looks_like_scenario, validate_scenario
from thrifty.config.cluster import ClusterConfig, looks_like_cluster_file
from thrifty.config.limits import Limits
from thrifty.config.loader import load_cluster, load_config, read_data, read_text
from thrifty.config.schema import ProjectConfig
from thrifty.errors import ConfigError


def _is_cluster_file(path: str) -> bool:
    return _is_file_of(path, looks_like_cluster_file)


def _is_file_of(path: str, kind: Callable[[Any], bool]) -> bool:
    file = Path(path)
    if not file.is_file():
        return False
    limits = Limits.from_env()
    try:
        data, _ = read_data(read_text(file, path, limits), path, limits)
    except ConfigError:
        return False  # unreadable or not YAML: the project loader reports it with file and line
    return kind(data)


def _validate_cluster(path: str, output: str) -> None:
    config = load_cluster(path)
    pools = config.pools()
    if output == "json":
        print_json({
            "file": path,
            "kind": "cluster",
            "valid": True,
            "config": config.model_dump(mode="json"),
            "pools": [
                {"name": p.name, "instance_type": p.spec.instance_type, "cpu": p.spec.cpu,
                 "mem_bytes": p.spec.mem_bytes, "gpus": p.spec.gpus, "gpu_mem_bytes": p.spec.gpu_mem_bytes,
                 "spot": p.spec.spot, "price_per_hour": p.spec.price_per_hour,
                 "price_on_demand_per_hour": p.spec.price_on_demand_per_hour,
                 "min_nodes": p.min_nodes, "max_nodes": p.max_nodes, "priority": p.priority}
                for p in pools
            ],
        })  # fmt: skip
        return
    noun = "pool" if len(pools) == 1 else "pools"
    click.echo(
        f"{path}: valid cluster file (engine {config.engine}, provider {config.provider.value}, {len(pools)} {noun})"
    )
    if pools:
        rows = [
            [p.name, p.spec.instance_type, f"{p.spec.cpu:g}", f"{p.spec.mem_bytes / 2**30:g}Gi",
             f"{p.spec.gpus} x {p.spec.gpu_mem_bytes / 2**30:g}Gi" if p.spec.gpus else "-",
             "spot" if p.spec.spot else "on-demand", f"${p.spec.price_per_hour:.4f}",
             f"{p.min_nodes}-{p.max_nodes}", str(p.priority)]
            for p in pools
        ]  # fmt: skip
        headers = ["POOL", "TYPE", "CPU", "MEM", "GPU", "CAPACITY", "$/H", "NODES", "PRIORITY"]
        click.echo(table(headers, rows))


@click.command()
@click.argument("path", default=".", type=click.Path())
@click.option(
    "--cluster",
    "cluster",
    is_flag=True,
    help="PATH is a cluster file (engine, provider, node pools). Detected from the top-level keys when left out.",
)
@click.option("--scenario", "scenario", is_flag=True, help="PATH is a cost simulator scenario (detected by its keys).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", help="Output format.")
def validate(path: str, cluster: bool, scenario: bool, output: str) -> None:
    """Check a project's thrifty.yaml, a cluster file or a simulator scenario, without deploying it."""
    if scenario or _is_file_of(path, looks_like_scenario):
        validate_scenario(path, output)
        return
    if cluster or _is_cluster_file(path):
        _validate_cluster(path, output)
        return
    file, config = load_config(path)
    if output == "json":
        print_json({"file": str(file), "valid": True, "config": config.model_dump(mode="json", by_alias=True)})
        return
    parts = []
    for noun, names in (("API", [a.name for a in config.apis]), ("splitter", [s.name for s in config.splitters])):
        if names:
            parts.append(f"{len(names)} {noun}{'s' if len(names) != 1 else ''}: {', '.join(names)}")
    click.echo(f"{file}: valid ({'; '.join(parts)})")


@click.command()
@click.option("--cluster", "cluster", is_flag=True, help="The cluster file's schema instead of thrifty.yaml's.")
def schema(cluster: bool) -> None:
    """Print the JSON Schema of thrifty.yaml (or, with --cluster, of the cluster file)."""
    if cluster:
        print_json(ClusterConfig.model_json_schema())
        return
    print_json(ProjectConfig.model_json_schema(by_alias=True))


COMMANDS = [validate, schema]
