"""A cost simulator scenario (``python -m thrifty.sim SCENARIO``): cluster, APIs, service times, traffic, spot, SLO.

One pydantic model, the only copy of the schema, read through the same bounded YAML loader as a project
and a cluster file (errors name the file, the line, the YAML path, the value and what is allowed). The
cluster is the cluster file's own schema and the APIs are thrifty's own ``ApiConfig``, so a user pastes
theirs; what the simulator needs beyond them (how long predictions take, how big the models are, what
traffic comes, how often spot nodes are reclaimed, what latency counts as served) sits in its own sections
keyed by API and pool name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from thrifty.config.cluster import ClusterConfig, ProviderName
from thrifty.config.limits import Limits
from thrifty.config.loader import read_data, read_text, validate_model
from thrifty.config.names import reject_duplicates
from thrifty.config.schema import ApiConfig
from thrifty.config.units import Duration, Percent, Size

MAX_DURATION_S = 7 * 24 * 3600.0
MAX_MODELS_PER_API = 100_000
MAX_APIS = 100
# p99 of a lognormal is exp(mu + Z99 * sigma): the 99th percentile of the standard normal.
Z99 = 2.3263478740408408


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyDistribution(_Strict):
    """A lognormal service time given by two percentiles (what a user measures), not by mu and sigma."""

    p50: Duration = Field(..., gt=0, description="Median time of one predict call (e.g. 40ms).")
    p99: Duration | None = Field(
        None, gt=0, description="99th percentile of one predict call; left out, every call takes exactly p50."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LatencyDistribution:
        if self.p99 is not None and self.p99 < self.p50:
            raise ValueError(f"p99 ({self.p99:g}s) is below p50 ({self.p50:g}s)")
        return self

    @property
    def mu(self) -> float:
        return math.log(self.p50)

    @property
    def sigma(self) -> float:
        return 0.0 if self.p99 is None else (math.log(self.p99) - math.log(self.p50)) / Z99


class ModelSetConfig(_Strict):
    """The models a multi-model API serves in the simulation (named ``<prefix><index>``)."""

    count: int = Field(..., ge=1, le=MAX_MODELS_PER_API, description="How many models the API serves.")
    prefix: str = Field("m", min_length=1, max_length=20, description="Model names are this prefix and an index.")
    size: Size = Field(..., gt=0, description="Bytes of one model, in memory and on disk (e.g. 300Mi).")
    download: Duration = Field(
        ..., ge=0, description="Time to download one model from the source to the replica's disk."
    )
    load: Duration = Field(..., ge=0, description="Time to load one model from local disk into memory (or the GPU).")
    zipf: float = Field(
        1.0, ge=0, le=5, description="Popularity: model k (1-based) is asked for in proportion to 1/k^zipf; 0 = equal."
    )


class ServiceConfig(_Strict):
    """How one API behaves on a replica: service times, the batch effect, cold start, its models."""

    time: LatencyDistribution = Field(..., description="Time of one predict call of one request (lognormal).")
    per_item: Duration = Field(
        0.0,
        ge=0,
        description="The batch effect: a batch of n requests takes time + per_item x (n - 1), one sample of "
        "time per batch.",
    )
    per_model: dict[str, LatencyDistribution] = Field(
        default_factory=dict,
        description="Service time of single models that differ from the API's (model name -> distribution).",
    )
    cold_start: Duration = Field(
        30.0, ge=0, description="From a replica placed on a ready node to its first request (image, process, init)."
    )
    models: ModelSetConfig | None = Field(None, description="The models of a multi-model API (models: set).")


class DiurnalConfig(_Strict):
    amplitude: float = Field(
        0.5, ge=0, lt=1, description="Rate swings between (1 - amplitude) and (1 + amplitude) x the mean rate."
    )
    peak_hour: float = Field(14.0, ge=0, lt=24, description="Hour of the day (0-24) of the highest rate.")


class BurstsConfig(_Strict):
    every: Duration = Field(..., gt=0, description="Mean time between bursts (bursts start as a Poisson process).")
    duration: Duration = Field(..., gt=0, description="How long one burst lasts.")
    factor: float = Field(..., gt=1, le=1000, description="Rate multiplier while a burst lasts.")


class ApiTrafficConfig(_Strict):
    share: float = Field(1.0, gt=0, description="Share of the total rate this API gets, relative to the others.")


class TrafficConfig(_Strict):
    """Where requests come from: a generated process, or a CSV trace."""

    kind: Literal["poisson", "gamma", "trace"] = Field(
        "poisson",
        description="poisson: exponential gaps; gamma: gaps with coefficient of variation cv (bursty above 1); "
        "trace: replay the CSV file in trace.",
    )
    rate: float = Field(10.0, gt=0, le=100_000, description="Mean requests per second over the day (generated).")
    cv: float = Field(1.0, gt=0, le=50, description="kind gamma: coefficient of variation of the gaps (1 = Poisson).")
    diurnal: DiurnalConfig | None = Field(None, description="A daily cycle of the rate; left out, the rate is flat.")
    bursts: BurstsConfig | None = Field(None, description="Short periods of a multiplied rate.")
    apis: dict[str, ApiTrafficConfig] = Field(
        default_factory=dict, description="Share of traffic per API (API name -> share); left out, equal shares."
    )
    trace: str | None = Field(
        None,
        description="kind trace: CSV file (relative to the scenario file) with the columns timestamp (seconds), "
        "api, model (empty for a single-model API).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> TrafficConfig:
        if self.kind == "trace" and self.trace is None:
            raise ValueError("kind trace needs a trace file (trace: requests.csv)")
        if self.kind != "trace" and self.trace is not None:
            raise ValueError("trace applies to kind: trace only")
        if self.kind != "gamma" and self.cv != 1.0:
            raise ValueError("cv applies to kind: gamma only")
        return self


class SpotProcessConfig(_Strict):
    """How often the spot nodes of one pool are reclaimed."""

    rate: float = Field(
        ..., ge=0, le=100, description="Interruptions per node-hour (e.g. 0.05: one per 20 node-hours on average)."
    )
    notice: Duration = Field(120.0, ge=0, description="Time from the interruption notice to the node's end (AWS: 2m).")
    correlation: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the pool's other spot nodes reclaimed together with one (a capacity event); 0 = "
        "independent.",
    )


class SloConfig(_Strict):
    """What counts as served: a latency target met by a share of all requests (failures count as missed)."""

    latency: Duration = Field(..., gt=0, description="Latency target from arrival at the gateway to the response.")
    share: Percent = Field(
        99.0, gt=0, le=100, description="Percent of requests that must finish under the latency (e.g. 99.9)."
    )


class ScenarioConfig(_Strict):
    name: str = Field(..., min_length=1, max_length=80, description="Name shown in the report.")
    description: str = Field("", max_length=2000, description="What the scenario models, for the report.")
    duration: Duration = Field(
        ..., gt=0, le=MAX_DURATION_S, description="Simulated time (e.g. 24h); a trace is cut there."
    )
    seed: int = Field(1, ge=0, le=2**32 - 1, description="Seed of every random draw: same seed, same report.")
    control_interval: Duration = Field(
        1.0, gt=0, le=60, description="Virtual time between two control-plane ticks (the in-flight sample period)."
    )
    warm_start: bool = Field(
        False, description="Start with the initial replicas and their nodes already up (no cold start at time 0)."
    )
    cluster: ClusterConfig = Field(..., description="The cluster file's schema (provider simulated, node pools).")
    apis: list[ApiConfig] = Field(..., min_length=1, description="The APIs, in thrifty.yaml's format.")
    service: dict[str, ServiceConfig] = Field(..., description="How each API behaves on a replica (API name ->).")
    traffic: TrafficConfig = Field(default_factory=TrafficConfig, description="The requests that arrive.")
    spot: dict[str, SpotProcessConfig] = Field(
        default_factory=dict, description="Interruption process per spot pool (pool name ->); left out, none."
    )
    slo: SloConfig = Field(..., description="The latency target the strategies are judged by.")

    @field_validator("apis")
    @classmethod
    def _unique(cls, v: list[ApiConfig]) -> list[ApiConfig]:
        if len(v) > MAX_APIS:
            raise ValueError(f"lists {len(v)} APIs; a scenario may have at most {MAX_APIS}")
        reject_duplicates((api.name for api in v), "API name")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> ScenarioConfig:
        if self.cluster.provider != ProviderName.SIMULATED:
            raise ValueError("cluster.provider must be simulated (the simulator buys nodes from node_pools)")
        names = {a.name for a in self.apis}
        missing = sorted(names - set(self.service))
        if missing:
            raise ValueError(f"service has no entry for the APIs {missing}; every API needs its service times")
        for section, keys in (("service", self.service), ("traffic.apis", self.traffic.apis)):
            unknown = sorted(set(keys) - names)
            if unknown:
                raise ValueError(f"{section} names APIs that are not in apis: {unknown}")
        for api in self.apis:
            multi = api.models is not None
            has_set = self.service[api.name].models is not None
            if multi != has_set:
                raise ValueError(
                    f"API {api.name!r}: service.{api.name}.models is required exactly when the API has models"
                )
        pools = {p.name: p for p in self.cluster.pools()}
        for pool in self.spot:
            if pool not in pools:
                raise ValueError(f"spot names the pool {pool!r}, which is not in cluster.node_pools")
            if not pools[pool].spec.spot:
                raise ValueError(f"spot names the pool {pool!r}, which is an on-demand pool (spot: false)")
        return self

    def api(self, name: str) -> ApiConfig:
        for a in self.apis:
            if a.name == name:
                return a
        raise KeyError(name)

    def api_shares(self) -> dict[str, float]:
        """Share of the traffic per API, summing to 1 (equal when ``traffic.apis`` is empty)."""
        raw = {a.name: (self.traffic.apis[a.name].share if a.name in self.traffic.apis else 0.0) for a in self.apis}
        if not self.traffic.apis:
            raw = {a.name: 1.0 for a in self.apis}
        total = sum(raw.values())
        return {k: v / total for k, v in raw.items()}


def parse_scenario_text(text: str, source: str, limits: Limits | None = None) -> ScenarioConfig:
    """Validate a scenario's text through the bounded YAML loader, with located errors."""
    limits = limits or Limits.from_env()
    data, lines = read_data(text, source, limits)
    return validate_model(ScenarioConfig, data, source, lines, limits,
                          "a mapping (name, duration, cluster, apis, service, traffic, slo, ...)",
                          "scenario")  # fmt: skip


def load_scenario(path: str | Path, limits: Limits | None = None) -> ScenarioConfig:
    """Read and validate a scenario file; its size is checked before it is read."""
    limits = limits or Limits.from_env()
    file = Path(path)
    return parse_scenario_text(read_text(file, str(file), limits), str(file), limits)


def trace_path(scenario_file: str | Path, scenario: ScenarioConfig) -> Path | None:
    """The trace file of a trace scenario, relative to the scenario file's folder."""
    if scenario.traffic.trace is None:
        return None
    p = Path(scenario.traffic.trace)
    return p if p.is_absolute() else Path(scenario_file).parent / p


def schema() -> dict[str, Any]:
    """The scenario's JSON Schema (every field described)."""
    return ScenarioConfig.model_json_schema()
