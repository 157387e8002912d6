"""The user-facing configuration (thrifty.yaml): one pydantic model, the only copy of the schema.

Field names match the YAML keys. Durations are seconds, sizes bytes, CPU cores after parsing (see
``config.units``). Every field has a description; ``thrifty schema`` prints the JSON Schema built from it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from thrifty.config.limits import Limits
from thrifty.config.units import CountOrPercent, Cpu, Duration, Size

API_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
RESERVED_API_NAMES = frozenset({"healthz", "readyz", "metrics", "_thrifty", "favicon.ico"})


def _limits(info: ValidationInfo) -> Limits | None:
    """The limits a deploy is checked against (passed as validation context by the loader). None when a
    config already accepted once is read back (from state.db): it is not checked again."""
    context = info.context
    return context.get("limits") if isinstance(context, dict) else None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class PredictorConfig(Strict):
    path: str = Field(
        "predictor.py",
        description="Python file with the predictor class, relative to the project folder.",
    )
    class_name: str = Field(
        "Predictor",
        alias="class",
        description="Name of the predictor class in that file.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Passed as is to the predictor's __init__(config)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set in each replica process.")

    @field_validator("config")
    @classmethod
    def _bounded(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limits = _limits(info)
        if limits is not None:
            size = len(orjson.dumps(v, default=str))
            if size > limits.predictor_config_bytes:
                raise ValueError(
                    f"takes {size} bytes as JSON; at most {limits.predictor_config_bytes} are allowed "
                    f"({limits.setting('predictor_config_bytes')}). Put larger data in a file in the project "
                    "folder or in a model source, and name it here."
                )
        return v

    @field_validator("path")
    @classmethod
    def _relative_py(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/") or not v.endswith(".py"):
            raise ValueError("must be a .py file inside the project folder (relative, no '..')")
        return v


class ComputeConfig(Strict):
    cpu: Cpu = Field(1.0, gt=0, description="CPU cores per replica (1, 0.5 or 500m).")
    mem: Size | None = Field(None, gt=0, description="Memory per replica (e.g. 512Mi, 2Gi).")
    gpu: float = Field(
        0,
        ge=0,
        description="GPUs per replica; fractions below 1 share a GPU (e.g. 0.25), above 1 whole GPUs.",
    )

    @field_validator("gpu")
    @classmethod
    def _gpu_whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a GPU amount above 1 must be a whole number (fractions share one GPU)")
        return v


class BatchingConfig(Strict):
    max_batch_size: int = Field(..., ge=1, le=4096, description="Most requests in one predict_batch call.")
    batch_interval: Duration = Field(
        ...,
        gt=0,
        le=60,
        description="Longest wait, from a batch's first request, before the batch fires even if not full.",
    )


class ServingConfig(Strict):
    max_concurrency: int = Field(1, ge=1, le=10_000, description="predict() calls executing at once per replica.")
    max_queue_length: int = Field(
        100,
        ge=0,
        le=100_000,
        description="Requests waiting per replica beyond max_concurrency; more get 503 + Retry-After at once.",
    )
    request_timeout: Duration = Field(
        30.0, gt=0, description="Longest time a request may spend in the replica (queue + predict); then 504."
    )
    max_payload: Size = Field(10 * 2**20, gt=0, description="Largest request body; larger gets 413.")
    batching: BatchingConfig | None = Field(
        None, description="Server-side batching; the predictor must define predict_batch(payloads)."
    )


class AutoscalingConfig(Strict):
    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: int = Field(100, ge=1, le=1000, description="Most replicas.")
    init_replicas: int | None = Field(
        None, ge=0, le=1000, description="Replicas at first deploy; default max(min_replicas, 1)."
    )
    target_in_flight: float | None = Field(
        None,
        gt=0,
        description="In-flight requests (queued + executing) per replica to aim for; "
        "default max_concurrency (x max_batch_size when batching).",
    )
    window: Duration = Field(60.0, gt=0, description="Averaging window of the in-flight signal.")
    upscale_stabilization_period: Duration = Field(
        0.0, ge=0, description="Scale up no higher than the lowest recommendation within this period."
    )
    downscale_stabilization_period: Duration = Field(
        300.0, ge=0, description="Scale down no lower than the highest recommendation within this period."
    )
    max_upscale_factor: float = Field(
        1.5, gt=1, description="Most replicas after one step, as a factor (+1 always allowed)."
    )
    max_downscale_factor: float = Field(
        0.75, gt=0, lt=1, description="Fewest replicas after one step, as a factor (-1 always allowed)."
    )
    upscale_tolerance: float = Field(0.05, ge=0, description="No upscale while raw/current is within 1 + this.")
    downscale_tolerance: float = Field(
        0.05, ge=0, lt=1, description="No downscale while raw/current is within 1 - this."
    )
    panic_window: Duration = Field(6.0, gt=0, description="Short window of panic mode.")
    panic_threshold: float = Field(
        2.0,
        gt=1,
        description="Panic (scale up at once, no scale-down) when the panic window asks for this many "
        "times the current replicas.",
    )
    scale_to_zero_after: Duration = Field(
        300.0, gt=0, description="With min_replicas 0: idle time after which the API drops to zero replicas."
    )
    cold_start_timeout: Duration = Field(
        120.0, gt=0, description="How long the gateway holds a request for an API at zero replicas; then 503."
    )
    max_cold_queue: int = Field(
        1000, ge=1, description="Most requests the gateway holds for an API at zero replicas; more get 503."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.init_replicas is not None and not (self.min_replicas <= self.init_replicas <= self.max_replicas):
            raise ValueError(
                f"init_replicas ({self.init_replicas}) must be between min_replicas ({self.min_replicas}) "
                f"and max_replicas ({self.max_replicas})"
            )
        return self

    @property
    def initial_replicas(self) -> int:
        return self.init_replicas if self.init_replicas is not None else max(self.min_replicas, 1)


class ModelsConfig(Strict):
    source: str = Field(
        ...,
        min_length=1,
        description="Model repository: a local folder or an fsspec URI (s3://..., http(s)://...). "
        "Layout <source>/<name>/<version>/... or <source>/<name>/... for one version.",
    )
    cache_size: int | None = Field(None, ge=1, description="Most models held in memory per replica.")
    cache_bytes: Size | None = Field(None, gt=0, description="Most bytes of models in memory per replica.")
    disk_cache_size: int | None = Field(None, ge=1, description="Most model versions kept on local disk.")
    disk_cache_bytes: Size | None = Field(None, gt=0, description="Most bytes of models on local disk.")
    poll_interval: Duration = Field(30.0, gt=0, description="How often the source is checked for new versions.")
    preload: list[str] = Field(default_factory=list, description="Models loaded when a replica starts.")

    @field_validator("preload")
    @classmethod
    def _few_preloads(cls, v: list[str], info: ValidationInfo) -> list[str]:
        limits = _limits(info)
        if limits is not None and len(v) > limits.preload_models:
            raise ValueError(
                f"lists {len(v)} models; at most {limits.preload_models} are allowed "
                f"({limits.setting('preload_models')})"
            )
        return v

    @model_validator(mode="after")
    def _cache_bounds(self) -> ModelsConfig:
        if self.cache_size is None and self.cache_bytes is None:
            raise ValueError("set cache_size (models) or cache_bytes (bytes) to bound the memory cache")
        if self.cache_size is not None and self.disk_cache_size is not None and self.disk_cache_size < self.cache_size:
            raise ValueError(
                f"disk_cache_size ({self.disk_cache_size}) must be at least cache_size ({self.cache_size})"
            )
        return self


class UpdateStrategyConfig(Strict):
    max_surge: CountOrPercent = Field("25%", description="Extra replicas allowed during a rolling update.")
    max_unavailable: CountOrPercent = Field("25%", description="Replicas that may be missing during a rolling update.")

    @model_validator(mode="after")
    def _not_both_zero(self) -> UpdateStrategyConfig:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError("max_surge and max_unavailable cannot both be 0: the update could never progress")
        return self


class AuthConfig(Strict):
    api_keys: list[str] = Field(
        default_factory=list,
        description="Accepted keys (Authorization: Bearer <key>); empty = open API. "
        "A value 'env:NAME' is read from the operator's environment at deploy time.",
    )

    @field_validator("api_keys")
    @classmethod
    def _key_shape(cls, v: list[str]) -> list[str]:
        for key in v:
            if not key.startswith("env:") and len(key) < 16:
                raise ValueError("an API key must have at least 16 characters (or be env:NAME)")
        return v


class ApiConfig(Strict):
    name: str = Field(..., description="API name: [a-z0-9-], starts with a letter, at most 40 characters.")
    predictor: PredictorConfig = Field(default_factory=PredictorConfig, description="The predictor class.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Resources per replica.")
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Per-replica request handling.")
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="Replica count policy.")
    models: ModelsConfig | None = Field(None, description="Multi-model API: models loaded on demand.")
    update_strategy: UpdateStrategyConfig = Field(
        default_factory=UpdateStrategyConfig,
        description="Rolling updates.",
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not API_NAME_RE.match(v):
            raise ValueError("must match [a-z][a-z0-9-]* and be at most 40 characters")
        if v in RESERVED_API_NAMES:
            raise ValueError(f"{v!r} is reserved")
        return v

    @property
    def target_in_flight(self) -> float:
        if self.autoscaling.target_in_flight is not None:
            return self.autoscaling.target_in_flight
        batch = self.serving.batching.max_batch_size if self.serving.batching else 1
        return float(self.serving.max_concurrency * batch)


class NodePoolConfig(Strict):
    name: str = Field(..., pattern=r"^[a-z][a-z0-9-]{0,39}$", description="Pool name.")
    instance_type: str = Field(..., description="Instance type (e.g. g4dn.xlarge).")
    cpu: Cpu = Field(..., gt=0, description="CPU cores per node.")
    mem: Size = Field(..., gt=0, description="Memory per node.")
    gpu: int = Field(0, ge=0, description="GPUs per node.")
    gpu_mem: Size | None = Field(None, gt=0, description="Memory per GPU.")
    price_on_demand: float = Field(..., ge=0, description="On-demand price, USD per hour.")
    price_spot: float | None = Field(None, ge=0, description="Spot price, USD per hour (spot pools).")
    spot: bool = Field(False, description="Spot (preemptible) capacity.")
    min_nodes: int = Field(0, ge=0, description="Fewest nodes.")
    max_nodes: int = Field(10, ge=1, description="Most nodes.")


class SpotConfig(Strict):
    on_demand_base_capacity: int = Field(0, ge=0, description="Nodes kept on-demand before any spot.")
    on_demand_percentage_above_base_capacity: int = Field(
        0, ge=0, le=100, description="Share of on-demand nodes above the base."
    )
    on_demand_backup: bool = Field(True, description="Fall back to on-demand when spot capacity is short.")


class ClusterConfig(Strict):
    engine: Literal["local", "ray"] = Field("local", description="Where replicas run.")
    provider: Literal["local", "simulated", "aws"] = Field("local", description="Where nodes come from.")
    node_pools: list[NodePoolConfig] = Field(default_factory=list, description="Node pools (not used locally).")
    spot: SpotConfig = Field(default_factory=SpotConfig, description="Spot / on-demand mix.")


class ProjectConfig(Strict):
    apis: list[ApiConfig] = Field(..., min_length=1, description="The APIs of this project.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Cluster settings.")

    @field_validator("apis", mode="before")
    @classmethod
    def _few_apis(cls, v: Any, info: ValidationInfo) -> Any:
        limits = _limits(info)
        if limits is not None and isinstance(v, list) and len(v) > limits.apis_per_project:
            raise ValueError(
                f"lists {len(v)} APIs; at most {limits.apis_per_project} are allowed in one project "
                f"({limits.setting('apis_per_project')})"
            )
        return v

    @field_validator("apis")
    @classmethod
    def _unique(cls, v: list[ApiConfig]) -> list[ApiConfig]:
        seen: set[str] = set()
        for api in v:
            if api.name in seen:
                raise ValueError(f"API name {api.name!r} appears more than once")
            seen.add(api.name)
        return v
