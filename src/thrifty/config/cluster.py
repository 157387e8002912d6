"""The cluster file (``thrifty up --cluster cluster.yaml``): the platform's engine, provider and node pools.

It belongs to the platform, not to a project: several projects share one cluster, and a user never edits
node pools to deploy a model (Cortex kept ``cluster.yaml`` apart for the same reason). One pydantic model,
the only copy of the schema; ``thrifty schema --cluster`` prints its JSON Schema and ``thrifty validate``
checks a file with the same errors (file, line, YAML path, value, what is allowed) as a project's;
``thrifty.config.loader.load_cluster`` reads one.

A pool may name only its ``instance_type``: the built-in catalog (``thrifty.catalog``) fills the CPU,
memory, GPUs, GPU memory and prices it leaves out; anything the pool states wins. ``ClusterConfig.pools()``
gives the resolved pools as the plain ``NodePool`` values the policies and providers use.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thrifty.catalog import close_matches, lookup
from thrifty.config.names import reject_duplicates
from thrifty.config.units import Cpu, Duration, Size
from thrifty.policy.cluster_types import NodePool, NodeSpec

POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
CUSTOM_INSTANCE_TYPE = "custom"
DEFAULT_LAUNCH_DELAY_S = 5.0

# Top-level keys only a cluster file has: how `thrifty validate` tells one from a project without --cluster.
CLUSTER_ONLY_KEYS = frozenset(
    {
        "engine",
        "address",
        "provider",
        "launch_delay",
        "node_idle_timeout",
        "consolidation",
        "node_pools",
        "spot",
        "spot_chaos",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderName(StrEnum):
    """Where nodes come from. ``aws`` is reserved: the name is part of the schema so cluster files and the
    provider seam (``thrifty.clouds``) are ready for it, but choosing it is an error until it ships."""

    LOCAL = "local"
    SIMULATED = "simulated"
    AWS = "aws"


AVAILABLE_PROVIDERS = (ProviderName.LOCAL, ProviderName.SIMULATED)


class NodePoolConfig(_Strict):
    name: str = Field(..., description="Pool name: [a-z0-9-], starts with a letter, at most 40 characters.")
    instance_type: str | None = Field(
        None,
        description="Instance type from the built-in catalog (e.g. m5.large, g4dn.xlarge); it fills cpu, mem, "
        "gpu, gpu_mem and prices left out here. Leave it out for a custom shape: then cpu, mem and "
        "price_on_demand are required.",
    )
    cpu: Cpu | None = Field(None, gt=0, description="CPU cores per node (default: the instance type's vCPUs).")
    mem: Size | None = Field(None, gt=0, description="Memory per node, e.g. 16Gi (default: the instance type's).")
    gpu: int | None = Field(None, ge=0, le=64, description="GPUs per node (default: the instance type's).")
    gpu_mem: Size | None = Field(
        None, gt=0, description="Memory of each GPU, e.g. 16Gi (default: the instance type's; required with gpu)."
    )
    price_on_demand: float | None = Field(
        None, ge=0, description="On-demand price of one node, USD per hour (default: the catalog's list price)."
    )
    spot: bool = Field(False, description="Spot (preemptible) nodes, priced at price_spot or with spot_discount.")
    price_spot: float | None = Field(
        None, ge=0, description="Spot price of one node, USD per hour (spot pools; exclusive with spot_discount)."
    )
    spot_discount: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Fraction off the on-demand price for spot nodes, e.g. 0.65 (default: the catalog's typical "
        "discount for the family).",
    )
    min_nodes: int = Field(0, ge=0, le=1000, description="Fewest nodes of this pool, kept even when idle.")
    max_nodes: int = Field(10, ge=1, le=1000, description="Most nodes of this pool.")
    priority: int = Field(
        0,
        ge=0,
        le=100,
        description="Breaks ties between pools of equal price: the lower number is chosen first (0 before 1).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not POOL_NAME_RE.match(v):
            raise ValueError("must match [a-z][a-z0-9-]* and be at most 40 characters")
        return v

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is None or lookup(v) is not None:
            return v
        near = close_matches(v)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ValueError(
            f"unknown instance type{hint} The catalog has the m5, c5, r5, g4dn, g5 and p3 families; for another "
            "shape leave instance_type out and set cpu, mem, gpu, gpu_mem and price_on_demand"
        )

    @model_validator(mode="after")
    def _complete(self) -> NodePoolConfig:
        if self.instance_type is None:
            missing = [f for f in ("cpu", "mem", "price_on_demand") if getattr(self, f) is None]
            if missing:
                raise ValueError(
                    f"a pool without instance_type must set {', '.join(missing)} (or name a catalog instance type)"
                )
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) is above max_nodes ({self.max_nodes})")
        if not self.spot and (self.price_spot is not None or self.spot_discount is not None):
            raise ValueError("price_spot and spot_discount apply to spot pools only: set spot: true or remove them")
        if self.price_spot is not None and self.spot_discount is not None:
            raise ValueError("set price_spot or spot_discount, not both")
        if self.spot and self.instance_type is None and self.price_spot is None and self.spot_discount is None:
            raise ValueError("a spot pool without instance_type must set price_spot or spot_discount")
        spec = self.node_spec()
        if spec.gpus > 0 and spec.gpu_mem_bytes <= 0:
            raise ValueError("a pool with GPUs must set gpu_mem (memory of each GPU)")
        if spec.gpus == 0 and self.gpu_mem is not None:
            raise ValueError("gpu_mem is set but the pool has no GPUs")
        return self

    def node_spec(self) -> NodeSpec:
        """One node of this pool: the pool's values, the catalog's where the pool leaves them out."""
        it = lookup(self.instance_type) if self.instance_type else None
        cpu = self.cpu if self.cpu is not None else float(it.vcpu) if it else 0.0
        mem = self.mem if self.mem is not None else it.mem_bytes if it else 0
        gpus = self.gpu if self.gpu is not None else it.gpus if it else 0
        gpu_mem = self.gpu_mem if self.gpu_mem is not None else it.gpu_mem_bytes if it and gpus else 0
        on_demand = self.price_on_demand if self.price_on_demand is not None else it.price_on_demand if it else 0.0
        price = on_demand
        if self.spot:
            if self.price_spot is not None:
                price = self.price_spot
            else:
                discount = self.spot_discount if self.spot_discount is not None else it.spot_discount if it else 0.0
                price = round(on_demand * (1.0 - discount), 6)
        return NodeSpec(
            pool=self.name,
            instance_type=it.name if it else CUSTOM_INSTANCE_TYPE,
            cpu=float(cpu),
            mem_bytes=int(mem),
            gpus=int(gpus),
            gpu_mem_bytes=int(gpu_mem) if gpus else 0,
            price_per_hour=float(price),
            spot=self.spot,
            price_on_demand_per_hour=float(on_demand),
        )

    def resolved(self) -> NodePool:
        return NodePool(spec=self.node_spec(), min_nodes=self.min_nodes, max_nodes=self.max_nodes,
                        priority=self.priority)  # fmt: skip


class ConsolidationConfig(_Strict):
    enabled: bool = Field(True, description="Move the replicas of an underused node onto the others and release it.")
    utilization_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A node is underused when every resource it has (CPU, memory, GPU) is reserved below this share.",
    )
    underused_for: Duration = Field(
        120.0, ge=0, description="How long a node must stay underused before it is consolidated."
    )
    move_timeout: Duration = Field(
        600.0,
        gt=0,
        description="Give up a consolidation (uncordon the node) when its replicas have not moved within this time.",
    )


class PoolChaosConfig(_Strict):
    interruptions_per_node_hour: float = Field(
        0.0, ge=0, le=3600, description="Each live spot node of the pool is reclaimed at this rate (Poisson)."
    )
    notice: Duration = Field(120.0, ge=0, le=3600, description="Notice before a reclaim; 0 = a hard kill.")
    correlation: float = Field(0.0, ge=0, le=1, description="Chance each other node of the pool is taken along.")
    outages_per_hour: float = Field(0.0, ge=0, le=3600, description="How often the pool runs out of capacity.")
    outage: Duration = Field(0.0, ge=0, le=86400, description="How long an outage lasts.")


class SpotChaosConfig(_Strict):
    """A random spot market on a running platform (``thrifty.clouds.preemption``; simulated provider only)."""

    seed: int = Field(0, description="Seed of the market's random choices (the same seed, the same market).")
    tick: Duration = Field(1.0, gt=0, le=60, description="How often the market is stepped.")
    pools: dict[str, PoolChaosConfig] = Field(
        default_factory=dict, description="Per spot pool: interruption rate, notice, correlation, outages."
    )


class SpotMixConfig(_Strict):
    on_demand_base_capacity: int = Field(
        0, ge=0, le=10_000, description="The first nodes of the cluster that are on-demand (AWS Auto Scaling meaning)."
    )
    on_demand_percentage_above_base_capacity: int = Field(
        0,
        ge=0,
        le=100,
        description="Percentage of the nodes above the base capacity that are on-demand (AWS Auto Scaling meaning); "
        "the rest are spot.",
    )
    on_demand_backup: bool = Field(
        True, description="When no spot pool has capacity, launch on-demand nodes instead and return to spot later."
    )
    notice_handling: Literal["drain", "ignore"] = Field(
        "drain",
        description="On a spot interruption notice: drain (cordon, replace first, stop routing, release before the "
        "deadline) or ignore (do nothing until the node dies, as Cortex did; for comparisons).",
    )
    probe_after: Duration = Field(
        60.0,
        gt=0,
        le=3600,
        description="A spot pool out of capacity is not bought from for this long, then probed; doubled after each "
        "further failure up to 10 minutes.",
    )


class ClusterConfig(_Strict):
    engine: Literal["local", "ray"] = Field(
        "local", description="Where replicas run: local subprocesses (default, no Ray needed) or Ray actors."
    )
    address: str | None = Field(
        None,
        min_length=1,
        description="engine ray: the Ray cluster to join (host:port or ray://host:port); left out, a local Ray "
        "cluster is started.",
    )
    provider: ProviderName = Field(
        ProviderName.LOCAL,
        description="Where nodes come from: local (this machine) or simulated (Ray worker nodes on this machine with "
        "the pools' shapes and prices). aws is reserved for a later release.",
    )
    launch_delay: Duration | None = Field(
        None,
        ge=0,
        le=3600,
        description=f"provider simulated: time from a launch request to a ready node "
        f"(default {DEFAULT_LAUNCH_DELAY_S:g}s).",
    )
    node_idle_timeout: Duration = Field(
        300.0, ge=0, description="A node with no replicas for this long is released (min_nodes are kept)."
    )
    consolidation: ConsolidationConfig = Field(
        default_factory=ConsolidationConfig, description="Releasing underused nodes by moving their replicas."
    )
    node_pools: list[NodePoolConfig] = Field(
        default_factory=list, description="Node pools nodes are bought from (provider simulated; not with local)."
    )
    spot: SpotMixConfig = Field(default_factory=SpotMixConfig, description="Spot / on-demand mix and notice handling.")
    spot_chaos: SpotChaosConfig | None = Field(
        None, description="Random spot interruptions and capacity outages per pool (provider simulated only)."
    )

    @field_validator("provider")
    @classmethod
    def _available(cls, v: ProviderName) -> ProviderName:
        if v not in AVAILABLE_PROVIDERS:
            allowed = " or ".join(repr(p.value) for p in AVAILABLE_PROVIDERS)
            raise ValueError(f"the {v.value!r} provider is reserved for a later release; use {allowed}")
        return v

    @field_validator("node_pools")
    @classmethod
    def _unique(cls, v: list[NodePoolConfig]) -> list[NodePoolConfig]:
        reject_duplicates((pool.name for pool in v), "pool name")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> ClusterConfig:
        if self.address is not None and self.engine != "ray":
            raise ValueError("address applies to engine: ray only")
        if self.launch_delay is not None and self.provider != ProviderName.SIMULATED:
            raise ValueError("launch_delay applies to provider: simulated only")
        if self.spot_chaos is not None:
            if self.provider != ProviderName.SIMULATED:
                raise ValueError("spot_chaos applies to provider: simulated only")
            unknown = sorted(set(self.spot_chaos.pools) - {p.name for p in self.node_pools})
            if unknown:
                raise ValueError(f"spot_chaos.pools names pools that node_pools does not have: {', '.join(unknown)}")
        if self.provider == ProviderName.SIMULATED and not self.node_pools:
            raise ValueError("provider simulated needs at least one entry in node_pools")
        if self.provider == ProviderName.LOCAL and self.node_pools:
            raise ValueError(
                "provider local has no node pools (this machine is the only node); use provider: simulated"
            )
        return self

    @property
    def launch_delay_s(self) -> float:
        return DEFAULT_LAUNCH_DELAY_S if self.launch_delay is None else self.launch_delay

    def pools(self) -> tuple[NodePool, ...]:
        """The node pools with the catalog's values filled in, in file order."""
        return tuple(p.resolved() for p in self.node_pools)


def looks_like_cluster_file(data: object) -> bool:
    """A mapping without ``apis``/``splitters`` and with at least one cluster-only top-level key."""
    if not isinstance(data, dict) or "apis" in data or "splitters" in data:
        return False
    return any(k in CLUSTER_ONLY_KEYS for k in data)
