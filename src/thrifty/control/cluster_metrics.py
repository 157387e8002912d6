"""The operator's ``/metrics`` (Prometheus text): what the cluster and each API cost, and the nodes held.

Served by the operator's admin listener (loopback, the admin token as a bearer token: Prometheus'
``authorization: {credentials_file: $THRIFTY_HOME/token}``), not by the gateway: the figures are the
operator's (nodes, placement, the cost ledger) and the gateway's hot path stays free of them. The gateway's
own ``/metrics`` keeps the request figures; join the two on the ``api`` label.
"""

from __future__ import annotations

from thrifty.control.cluster import Cluster


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def cost_metrics(cluster: Cluster, apis: list[str], wall_now: float) -> str:
    info = cluster.info(wall_now)
    cost = info["cost"]
    lines = [
        "# HELP thrifty_cluster_cost_per_hour What the nodes held now cost, USD per hour.",
        "# TYPE thrifty_cluster_cost_per_hour gauge",
        f"thrifty_cluster_cost_per_hour {cost['per_hour']}",
        "# HELP thrifty_cluster_idle_cost_per_hour The share of the nodes' price no replica reserves, USD per hour.",
        "# TYPE thrifty_cluster_idle_cost_per_hour gauge",
        f"thrifty_cluster_idle_cost_per_hour {cost['idle_per_hour']}",
        "# HELP thrifty_cluster_spot_savings_per_hour The same nodes on demand minus what they cost, USD per hour.",
        "# TYPE thrifty_cluster_spot_savings_per_hour gauge",
        f"thrifty_cluster_spot_savings_per_hour {cost['spot_savings_per_hour']}",
        "# HELP thrifty_api_cost_per_hour An API's share of the nodes' price by what its replicas reserve, USD/h.",
        "# TYPE thrifty_api_cost_per_hour gauge",
    ]
    figures = {name: cluster.costs.api(name) for name in sorted(apis)}
    lines += [f'thrifty_api_cost_per_hour{{api="{_label(n)}"}} {f["per_hour"]}' for n, f in figures.items()]
    lines += [
        "# HELP thrifty_api_cost_dollars What an API cost over the cost window, USD.",
        "# TYPE thrifty_api_cost_dollars gauge",
    ]
    lines += [f'thrifty_api_cost_dollars{{api="{_label(n)}"}} {f["spent"]}' for n, f in figures.items()]
    lines += [
        "# HELP thrifty_api_cost_per_million_requests USD per million requests over the cost window.",
        "# TYPE thrifty_api_cost_per_million_requests gauge",
    ]
    lines += [
        f'thrifty_api_cost_per_million_requests{{api="{_label(n)}"}} {f["per_million_requests"]}'
        for n, f in figures.items()
        if f["per_million_requests"] is not None
    ]
    lines += [
        "# HELP thrifty_node_price_per_hour Each node held, USD per hour (state, pool and capacity as labels).",
        "# TYPE thrifty_node_price_per_hour gauge",
    ]
    for node in info["nodes"]:
        labels = (
            f'node="{_label(node["id"])}",pool="{_label(node["pool"])}",capacity="{node["capacity"]}",'
            f'instance_type="{_label(node["instance_type"])}",state="{node["state"]}"'
        )
        lines.append(f"thrifty_node_price_per_hour{{{labels}}} {node['price_per_hour']}")
    lines += ["# HELP thrifty_pending_replicas Replicas waiting for a node.", "# TYPE thrifty_pending_replicas gauge"]
    lines.append(f"thrifty_pending_replicas {info['pending_replicas']}")
    return "\n".join(lines) + "\n"
