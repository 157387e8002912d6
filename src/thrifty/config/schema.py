"""The user-facing configuration (thrifty.yaml): one pydantic model, the only copy of the schema.

Field names match the YAML keys. Durations are seconds, sizes bytes, CPU cores after parsing (see
``config.units``). Every field has a description; ``thrifty schema`` prints the JSON Schema built from it.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from thrifty.config.cluster import POOL_NAME_RE, ClusterConfig
from thrifty.config.limits import Limits
from thrifty.config.names import reject_duplicates
from thrifty.config.units import CountOrPercent, Cpu, Duration, Percent, Size

API_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
RESERVED_API_NAMES = frozenset({"healthz", "readyz", "metrics", "_thrifty", "favicon.ico", "v2"})
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an HTTP token (RFC 9110)


def _api_name(v: str) -> str:
    """An API or splitter name: served at /<name>."""
    if not API_NAME_RE.match(v):
        raise ValueError("must match [a-z][a-z0-9-]* and be at most 40 characters")
    if v in RESERVED_API_NAMES:
        raise ValueError(f"{v!r} is reserved")
    return v


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
    gpu_mem: Size | None = Field(
        None,
        gt=0,
        description="GPU memory per replica (e.g. 4Gi), on one GPU; default: its gpu fraction of the GPU's memory.",
    )
    node_pool: list[str] | None = Field(
        None,
        description="Run only on nodes of this pool (a name, or a list of names) of the cluster file; default any.",
    )
    spot: Literal["prefer", "require", "never"] = Field(
        "prefer",
        description="Spot nodes: prefer (spot first, on-demand allowed), require (spot only), never (on-demand only).",
    )

    @field_validator("gpu")
    @classmethod
    def _gpu_whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a GPU amount above 1 must be a whole number (fractions share one GPU)")
        return v

    @field_validator("node_pool", mode="before")
    @classmethod
    def _one_or_more_pools(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("node_pool")
    @classmethod
    def _pool_names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("name at least one pool, or leave node_pool out for any pool")
            bad = [n for n in v if not POOL_NAME_RE.match(n)]
            if bad:
                raise ValueError(f"{bad[0]!r} is not a pool name ([a-z][a-z0-9-]*, at most 40 characters)")
        return v

    @model_validator(mode="after")
    def _gpu_mem_needs_gpu(self) -> ComputeConfig:
        if self.gpu_mem is not None and self.gpu == 0:
            raise ValueError("gpu_mem is set but gpu is 0: set gpu (e.g. 0.25) as well")
        return self


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
    stream_idle_timeout: Duration = Field(
        30.0,
        gt=0,
        description="A streaming predict (a generator): longest wait for the next chunk once the first is sent "
        "(request_timeout bounds the first); then the stream is cut (SSE: event: error).",
    )
    max_stream_duration: Duration | None = Field(
        None, gt=0, description="A streaming predict: longest a whole stream may last; default no cap."
    )
    batching: BatchingConfig | None = Field(
        None, description="Server-side batching; the predictor must define predict_batch(payloads)."
    )
    protocol: Literal["thrifty", "v2"] = Field(
        "thrifty",
        description="Request protocol: thrifty (POST /<api>, any JSON, text or bytes) or v2 (the Open Inference "
        "Protocol, KServe V2 REST: POST /v2/models/<api>/infer; the predictor gets {input name: numpy array}).",
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
    keep_warm: Duration = Field(
        0.0,
        ge=0,
        le=86400,
        description="Keep enough replicas that every model requested within this window fits the replicas' "
        "memory caches (2 x models / cache_size replicas at least); 0 = off: replicas follow the load only.",
    )

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
        if self.keep_warm and self.cache_size is None:
            raise ValueError("keep_warm needs cache_size (models per replica) to size the fleet's caches")
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
        return _api_name(v)

    @property
    def target_in_flight(self) -> float:
        if self.autoscaling.target_in_flight is not None:
            return self.autoscaling.target_in_flight
        batch = self.serving.batching.max_batch_size if self.serving.batching else 1
        return float(self.serving.max_concurrency * batch)


class SplitterBackend(Strict):
    api: str = Field(..., description="An API that takes a share of the splitter's requests.")
    weight: float = Field(..., ge=0, le=1_000_000, description="Share of requests, relative to the other backends.")

    _api = field_validator("api")(classmethod(lambda cls, v: _api_name(v)))


class ShadowConfig(Strict):
    api: str = Field(..., description="An API that gets copies of requests; its responses are dropped.")
    percent: Percent = Field(100.0, gt=0, description="Share of requests copied to it (e.g. 100 or 10%).")

    _api = field_validator("api")(classmethod(lambda cls, v: _api_name(v)))


class CanaryConfig(Strict):
    api: str = Field(..., description="The backend being rolled out; one of the splitter's backends.")
    steps: list[float] = Field(
        [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Percent of requests the canary gets at each step, increasing, the last one 100 (promotion).",
    )
    interval: Duration = Field(120.0, gt=0, description="Time at each step before it is judged.")
    max_error_rate: Percent = Field(
        1.0, description="Highest share of the canary's requests that may fail (5xx) in an interval (e.g. 1%)."
    )
    max_p99_ratio: float = Field(
        1.5, gt=0, description="Highest canary p99 latency, as a multiple of the stable backends' p99."
    )
    min_requests: int = Field(
        20,
        ge=1,
        description="Fewest canary requests an interval needs to be judged; with fewer the step is held and judged "
        "again after the next interval.",
    )

    _api = field_validator("api")(classmethod(lambda cls, v: _api_name(v)))

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < x <= 100 for x in v):
            raise ValueError(f"each step is a percent above 0 and at most 100, got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must increase, got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (the canary is promoted there), got {v[-1]:g}")
        return v


class SplitterConfig(Strict):
    """Served at /<name> like an API: each request goes to one backend API by weight (smooth weighted round robin)."""

    name: str = Field(..., description="Splitter name: served at /<name>, like an API; must not be an API's name.")
    backends: list[SplitterBackend] = Field(
        ..., min_length=1, max_length=32, description="The APIs that serve this splitter's requests, with weights."
    )
    shadow: ShadowConfig | None = Field(None, description="Copies of requests to another API; responses dropped.")
    sticky_header: str | None = Field(
        None,
        description="A request header (e.g. X-User) whose value picks the backend by a stable hash: the same value "
        "gets the same backend while the weights are unchanged.",
    )
    canary: CanaryConfig | None = Field(
        None, description="Automated canary: move traffic to one backend step by step while it stays healthy."
    )

    _name = field_validator("name")(classmethod(lambda cls, v: _api_name(v)))

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not HEADER_NAME_RE.match(v):
            raise ValueError("must be an HTTP header name (letters, digits and -, at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SplitterConfig:
        names = [b.api for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backend {dupes[0]!r} is listed more than once; give each API one weight")
        if self.name in names:
            raise ValueError(f"splitter {self.name!r} lists itself as a backend; backends are APIs")
        if sum(b.weight for b in self.backends) <= 0:
            raise ValueError("the backends' weights add up to 0; at least one weight must be above 0")
        if self.shadow is not None and self.shadow.api in [*names, self.name]:
            raise ValueError(
                f"shadow API {self.shadow.api!r} is also a backend; a shadow only gets copies of requests: "
                "use another API"
            )
        if self.canary is not None:
            if self.canary.api not in names:
                raise ValueError(f"canary API {self.canary.api!r} is not one of the backends {names}")
            if not any(b.weight > 0 for b in self.backends if b.api != self.canary.api):
                raise ValueError(
                    f"the canary {self.canary.api!r} needs a stable backend with a weight above 0 to be judged "
                    "against and to take traffic back on a rollback"
                )
        return self

    @property
    def api_names(self) -> list[str]:
        """Every API this splitter sends requests to (backends, then the shadow)."""
        return [b.api for b in self.backends] + ([self.shadow.api] if self.shadow is not None else [])


class ProjectConfig(Strict):
    """A project holds APIs, splitters, or both. A splitter's backends and shadow name APIs of this project or
    APIs already deployed from another project: names are checked here, existence at deploy."""

    apis: list[ApiConfig] = Field(default_factory=list, description="The APIs of this project.")
    splitters: list[SplitterConfig] = Field(
        default_factory=list, description="Traffic splitters: one URL whose requests go to several APIs by weight."
    )
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="Deprecated here: the cluster belongs in its own file (thrifty up --cluster cluster.yaml). "
        "Accepted with the cluster file's schema for older projects; not used by deploys.",
    )

    @field_validator("apis", "splitters", mode="before")
    @classmethod
    def _few_apis(cls, v: Any, info: ValidationInfo) -> Any:
        limits = _limits(info)
        if limits is not None and isinstance(v, list) and len(v) > limits.apis_per_project:
            what = "APIs" if info.field_name == "apis" else "splitters"
            raise ValueError(
                f"lists {len(v)} {what}; at most {limits.apis_per_project} are allowed in one project "
                f"({limits.setting('apis_per_project')})"
            )
        return v

    @field_validator("apis")
    @classmethod
    def _unique(cls, v: list[ApiConfig]) -> list[ApiConfig]:
        reject_duplicates((api.name for api in v), "API name")
        return v

    @field_validator("splitters")
    @classmethod
    def _splitter_names(cls, v: list[SplitterConfig], info: ValidationInfo) -> list[SplitterConfig]:
        apis = {api.name for api in info.data.get("apis", [])}
        seen: set[str] = set()
        for i, splitter in enumerate(v):
            if splitter.name in seen:
                raise ValueError(f"splitter name {splitter.name!r} appears more than once")
            if splitter.name in apis:
                raise ValueError(
                    f"splitters[{i}].name {splitter.name!r} is also the name of an API of this project; both would be "
                    f"served at /{splitter.name}: rename one"
                )
            seen.add(splitter.name)
        for i, splitter in enumerate(v):
            for name in splitter.api_names:
                if name in seen:
                    raise ValueError(
                        f"splitters[{i}] sends requests to {name!r}, which is a splitter; backends and shadows are APIs"
                    )
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> ProjectConfig:
        if not self.apis and not self.splitters:
            raise ValueError("the project has no APIs and no splitters; list at least one under apis or splitters")
        return self
