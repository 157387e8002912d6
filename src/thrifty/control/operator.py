"""The operator: desired state (deployed API revisions) vs observed state (replicas, nodes) -> actions.

One asyncio task runs the reconcile loop; another samples the gateway's counters every second and ticks
the autoscaler (``control.scaling``). ``reconcile_once(now)`` runs the ordered steps, each a small module
with an ``update(now)`` that reads observed state, calls its pure policy and returns actions:

1. deployments (``control.deployments``): each API's revision and count -> replicas to start and stop;
2. on a cluster (``control.cluster``): nodes -> placement -> provisioning (launch, release, consolidate)
   -> where each new replica starts;
3. splitters (``control.splitters``): canary weights;
4. routes (``control.routes``): the gateway learns who drains before anything stops;
5. engine actions (``control.engine_actions``): stops, then starts (pinned to their node on a cluster).

Time is read only through the injected clocks (``mono`` for durations, ``clock`` for timestamps), so the
cost simulator runs this same code on a virtual clock with a fake engine, gateway and cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from thrifty.config.limits import Limits, check_api_total
from thrifty.config.loader import CONFIG_NAMES, parse_file
from thrifty.control.api_state import (
    ApiRuntime,
    adopt_runtime,
    api_summary,
    redacted,
    replica_rows,
    route_entry,
)
from thrifty.control.cluster import Cluster
from thrifty.control.deployments import DeploymentsStep, random_suffix
from thrifty.control.engine_actions import EngineActions
from thrifty.control.gateway_link import Gateway
from thrifty.control.home import Home
from thrifty.control.routes import RoutesStep
from thrifty.control.scaling import Autoscaler
from thrifty.control.splitters import Splitters
from thrifty.control.store import ProcessRecord, Store
from thrifty.control.stored_keys import resolve_keys, scrub_config_file, with_hashed_project_keys
from thrifty.control.traffic import TrafficHistory
from thrifty.engines.base import Engine, NodePlacement, PlacingEngine, ReplicaLaunch, ReplicaObservation
from thrifty.errors import ConfigError, NotFoundError
from thrifty.policy.placement import request_of
from thrifty.policy.spot import ReplicaLoad
from thrifty.project_archive import combine_digests, unpack
from thrifty.spec import ApiSpec

log = logging.getLogger("thrifty.operator")

PROJECT_GC_INTERVAL_S = 60.0
LOST_WITH_NODE_KEEP_S = 600.0  # longer than a request waits for the verdict (its timeout)
REPLICA_DRAIN_MARGIN_S = 5.0


class Operator:
    def __init__(
        self,
        home: Home,
        store: Store,
        engine: Engine,
        gateway: Gateway,
        *,
        tick_s: float = 0.25,
        stop_grace_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
        placing: PlacingEngine | None = None,
        ids: Callable[[], str] = random_suffix,
    ) -> None:
        """``cluster``: node pools, placement and provisioning (``thrifty up --cluster``); None: every replica
        starts on this machine as soon as it is asked for. ``placing``: the engine again, when it pins replicas.
        ``ids``: the random part of replica ids and refresh nonces (seeded in the simulator, so a run repeats)."""
        self.home = home
        self.store = store
        self.engine = engine
        self.gateway = gateway
        self.tick_s = tick_s
        self.stop_grace_s = stop_grace_s
        self.clock = clock  # wall time: timestamps shown to users
        self.mono = mono  # monotonic: every duration the policies measure
        self.apis: dict[str, ApiRuntime] = {}
        self.traffic = TrafficHistory()
        self.observed: list[ReplicaObservation] = []
        self.started_s = clock()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._api_keys: dict[str, list[str]] = {}
        # Replicas that exited because their node went away (not crashes), when: listed to the gateway as
        # lost_with_node for a while, so that requests they cut off do not count against its poison bound.
        self._lost_with_node: dict[str, tuple[str, float]] = {}
        self.autoscaler = Autoscaler()
        self.splitters = Splitters(store, clock)  # deployed splitters, their routes and canaries
        self._deploy_lock = asyncio.Lock()
        self._gateway_failures = 0
        self._projects_cleaned_s = -PROJECT_GC_INTERVAL_S
        self._gateway_retry_at = 0.0
        self.cluster = cluster
        self._ids = ids
        self.deployments = DeploymentsStep(self.apis, store, clock, ids)
        self.routes = RoutesStep(gateway)
        self.actions = EngineActions(engine, self.apis, store, clock, placing=placing)

    # lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the deployed APIs; replicas the engine adopted after a crash count as already running."""
        adopted = [o for o in self.engine.observe() if o.state != "exited"]
        self.actions.recorded = {r.id for r in self.store.processes() if r.kind == "replica"}
        for stored in self.store.list_apis():
            spec = stored.spec
            try:
                self._api_keys[spec.name] = resolve_keys(spec.config.auth.api_keys, spec.name)
            except ConfigError as exc:
                self.store.add_event(spec.name, "error", exc.message, self.clock())
                self._api_keys[spec.name] = []
            rt = ApiRuntime(spec, stored.created_s, stored.updated_s, spec.config.autoscaling.initial_replicas)
            running = adopt_runtime(rt, [o for o in adopted if o.api == spec.name])
            self.apis[spec.name] = rt
            adoption = f" ({running} running replicas adopted)" if running else ""
            message = "restored after an operator restart" + adoption
            self.store.add_event(spec.name, "restored", message, self.clock())
        self.splitters.restore()
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._metrics_loop(), name="metrics"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("background task had failed: %r", result)
        try:
            # Every replica draining: the gateway sends nothing new and answers 503 + Retry-After, not 404.
            table = self.routes_table(self.observed, {o.replica_id for o in self.observed})
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                await self.gateway.push_routes(table)
            await self.engine.close(self.stop_grace_s)
            self._forget_processes([])  # all stopped: nothing left for a later operator to adopt
            if self.cluster is not None:
                await self.cluster.close()  # every node given back
        finally:
            await self.gateway.stop(self.stop_grace_s)

    # admin operations ----------------------------------------------------------------------------------
    async def deploy(self, archive: bytes, config_name: str | None = None) -> dict[str, Any]:
        """Validate fully, then apply. A bad project changes nothing that runs."""
        async with self._deploy_lock:  # two deploys at once apply one after the other, never interleaved
            return await self._deploy(archive, config_name)

    async def _deploy(self, archive: bytes, config_name: str | None) -> dict[str, Any]:
        # Extraction and hashing are blocking file work: keep them off the loop that runs the reconcile ticks.
        project_dir, digests = await asyncio.to_thread(unpack, archive, self.home.projects_dir)
        names = [config_name] if config_name else list(CONFIG_NAMES)
        config_file = next((project_dir / n for n in names if (project_dir / n).is_file()), None)
        if config_file is None:
            raise ConfigError(f"the project has no {' or '.join(names)}")
        source = config_name or config_file.name
        limits = Limits.from_env()  # the operator's own bounds: it never trusts the CLI's checks
        config = await asyncio.to_thread(parse_file, config_file, source, limits)  # up to ~1 s for a big one
        hashed = with_hashed_project_keys(config, {name: rt.spec.config for name, rt in self.apis.items()})
        await asyncio.to_thread(scrub_config_file, config_file, config, hashed)  # the stored copy: no literal key
        config = hashed
        check_api_total(set(self.apis), [api.name for api in config.apis], limits, source)
        self.splitters.check(config, {name: rt.spec.config for name, rt in self.apis.items()}, source)
        for api in config.apis:
            if not (project_dir / api.predictor.path).is_file():
                raise ConfigError(
                    f"{source}: apis[{config.apis.index(api)}].predictor.path = {api.predictor.path!r}: "
                    "no such file in the project folder"
                )
        keys = {api.name: resolve_keys(api.auth.api_keys, source) for api in config.apis}
        # The config file is not code: editing only autoscaling or keys in it must not restart replicas.
        code_hash = combine_digests(digests, exclude=config_file.name)
        now = self.clock()
        results = []
        for api in config.apis:
            spec = ApiSpec(api.name, api, code_hash, str(project_dir))
            current = self.apis.get(api.name)
            if current is None:
                action = "created"
                self.apis[api.name] = ApiRuntime(spec, now, now, api.autoscaling.initial_replicas)
            elif current.spec.revision == spec.revision and current.spec.config == api:
                action = "unchanged"
            else:
                action = "updated" if current.spec.revision != spec.revision else "config updated in place"
                if action != "updated":
                    # Same code: keep the folder the running replicas use (they may have written into it).
                    spec = ApiSpec(api.name, api, code_hash, current.spec.project_dir)
                current.spec = spec
                current.updated_s = now
                current.desired = min(max(current.desired, api.autoscaling.min_replicas), api.autoscaling.max_replicas)
                if action == "updated":
                    current.last_error = None
                    current.status = "updating"  # until the next tick sees the new revision's replicas
            self._api_keys[api.name] = keys[api.name]
            if action != "unchanged":
                self.store.put_api(spec, now)
                self.store.add_event(api.name, "deploy", f"{action} (revision {spec.revision})", now)
            results.append({"name": api.name, "action": action, "revision": self.apis[api.name].revision})
        splitters = self.splitters.apply(config.splitters, now)
        self._wake.set()
        return {"project": project_dir.name[:12], "apis": results, "splitters": splitters}

    def _runtime(self, name: str) -> ApiRuntime:
        rt = self.apis.get(name)
        if rt is None:
            raise NotFoundError(f"no API named {name!r} is deployed", details={"api": name})
        return rt

    async def delete(self, name: str) -> dict[str, Any]:
        if name in self.splitters.runtimes and name not in self.apis:
            self._wake.set()
            return self.splitters.delete(name)
        self._runtime(name)
        self.splitters.check_api_delete(name)
        del self.apis[name]
        if self.cluster is not None:
            self.cluster.drop_api(name)
        self._api_keys.pop(name, None)
        self.store.delete_api(name)
        self.store.add_event(name, "delete", "API deleted", self.clock())
        self._wake.set()
        return {"name": name, "deleted": True}

    def refresh(self, name: str) -> dict[str, Any]:
        rt = self._runtime(name)
        rt.refresh_nonce = "-" + self._ids()
        rt.status = "updating"
        self.store.add_event(name, "refresh", f"rolling restart (revision {rt.revision})", self.clock())
        self._wake.set()
        return {"name": name, "revision": rt.revision}

    def replicas_of(self, name: str) -> list[ReplicaObservation]:
        return [o for o in self.observed if o.api == name]

    def describe(self, name: str, *, detail: bool = False) -> dict[str, Any]:
        rt = self._runtime(name)
        reps = self.replicas_of(name)
        traffic = self.traffic.summary(name)
        out = api_summary(rt, reps, traffic)
        if self.cluster is not None:
            out["cluster"] = self.cluster.waiting(name)  # replicas waiting for a node, and why
            out["cost"] = self.cluster.costs.api(name)
        if detail:
            out.update(
                endpoint=f"{self.gateway.url}/{name}",
                replica_list=replica_rows(reps, traffic),
                revisions=[{"revision": r, "created": c} for r, c in self.store.revisions(name)],
                rollout=rt.last_plan,
                autoscaling=self.autoscaler.last_decision(name),
                config=redacted(rt.spec.config_json),
            )
            if rt.spec.config.models is not None:
                out["models"] = self.traffic.models(name)
        return out

    def list_apis(self) -> list[dict[str, Any]]:
        return [self.describe(name) for name in sorted(self.apis)]

    # reconcile -----------------------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            self._wake.clear()  # before the tick: a wake-up that arrives during it is kept for the next one
            try:
                await self.reconcile_once()
            except Exception:  # the loop must survive anything one tick does
                log.exception("reconcile tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)

    async def reconcile_once(self, now: float | None = None) -> None:
        """One pass of the ordered steps (see the module docstring) at ``now`` (default: the mono clock)."""
        now = self.mono() if now is None else now
        if not self.gateway.alive():
            await self._restart_gateway(now)
        observed = self.engine.observe()
        for obs in observed:
            if obs.state == "exited":
                self.engine.forget(obs.replica_id)
                if self.cluster is not None and self.cluster.lost_with_node(obs.replica_id):
                    # Its node was given back or reclaimed: not a crash, no restart backoff.
                    self._lost_with_node[obs.replica_id] = (obs.api, self.mono())
                    self.store.add_event(obs.api, "replica_lost", f"{obs.replica_id}: its node went away",
                                         self.clock(), {"node": self.cluster.node_of(obs.replica_id)})  # fmt: skip
                else:
                    self.deployments.on_exit(obs, now)
                if self.cluster is not None:
                    self.cluster.forget(obs.replica_id)
        observed = [o for o in observed if o.state != "exited"]

        cluster = self.cluster
        if cluster is None:
            plan = self.deployments.update(now, observed)
            stops = list(plan.stops)
            starts: list[tuple[ReplicaLaunch, NodePlacement | None, str | None]] = [
                (s, None, None) for s in plan.starts
            ]
        else:
            plan = self.deployments.update(now, observed, cluster.pending_views, cluster.hidden(observed))
            stops = [rid for rid in plan.stops if not cluster.drop(rid)]  # a pending one just goes
            for launch in plan.starts:
                cluster.queue(launch, request_of(self.apis[launch.api].spec.config.compute), now)
            tick = await cluster.update(now, observed, self.deployments.replacement, self._request_totals(),
                                        self._loads(observed))  # fmt: skip
            stops.extend(rid for rid in tick.stops if rid not in stops)
            starts = [(o.launch, o.placement, o.node_id) for o in tick.starts]

        self.observed = observed
        self._forget_processes(observed)
        if now - self._projects_cleaned_s > PROJECT_GC_INTERVAL_S:
            self._clean_projects(observed, now)
        self.splitters.update(now, self.traffic)  # canaries: weights for this tick's table
        draining = set(stops) | (self._spot_draining(observed, cluster.draining(), set(stops)) if cluster else set())
        if not await self.routes.update(now, self.routes_table(observed, draining)):
            stops = []  # the gateway does not know they drain: stopping them now would cut requests off
        await self.actions.update([(rid, self._grace_s(rid)) for rid in stops], starts)

    @staticmethod
    def _spot_draining(observed: list[ReplicaObservation], marks: set[str], stops: set[str]) -> set[str]:
        """The spot step's draining marks (unrouted, or on a dying node), except for an API they would leave
        with no routable replica: the gateway answers an all-draining API at once (the platform stopping),
        while unmarked it holds requests through the gap and retries cut-off ones until a replacement is ready."""
        out: set[str] = set()
        by_api: dict[str, list[str]] = {}
        for o in observed:
            if o.state == "ready":
                by_api.setdefault(o.api, []).append(o.replica_id)
        for ids in by_api.values():
            marked = [r for r in ids if r in marks]
            if any(r not in marks and r not in stops for r in ids):
                out.update(marked)
        return out

    def _loads(self, observed: list[ReplicaObservation]) -> dict[str, ReplicaLoad]:
        """Each replica as the data plane sees it (the spot step's room check): ready, in flight (the gateway's
        last sample), and the requests it runs at once (max_concurrency x max_batch_size)."""
        out: dict[str, ReplicaLoad] = {}
        per_api: dict[str, tuple[dict[str, Any], int]] = {}  # API -> (its replicas' figures, capacity of one)
        loads: dict[tuple[bool, int, int], ReplicaLoad] = {}  # equal loads are one object
        for o in observed:
            api = per_api.get(o.api)
            if api is None:
                rt = self.apis.get(o.api)
                if rt is None:
                    continue
                serving = rt.spec.config.serving
                batch = serving.batching.max_batch_size if serving.batching is not None else 1
                figures = self.traffic.summary(o.api).get("replicas", {}) or {}
                api = per_api[o.api] = (figures, max(1, serving.max_concurrency * batch))
            figures, capacity = api
            key = (o.state == "ready", int((figures.get(o.replica_id) or {}).get("in_flight", 0)), capacity)
            load = loads.get(key)
            if load is None:
                load = loads[key] = ReplicaLoad(*key)
            out[o.replica_id] = load
        return out

    def _request_totals(self) -> dict[str, int]:
        """Each API's requests counted by the gateway so far (for $ per million requests)."""
        return {name: sum(self.traffic.summary(name)["requests"].values()) for name in self.apis}

    def _clean_projects(self, observed: list[ReplicaObservation], now: float) -> None:
        """Remove uploaded project folders nothing uses any more, once no rollout is in progress."""
        if any(o.api not in self.apis or o.revision != self.apis[o.api].revision for o in observed):
            return  # old replicas may still run from an older folder
        if self._deploy_lock.locked():
            return  # a deploy has unpacked a folder that no API names yet
        self._projects_cleaned_s = now
        keep = {Path(rt.spec.project_dir).name for rt in self.apis.values()}
        for folder in self.home.projects_dir.iterdir():
            stale_upload = folder.name.startswith(".incoming-") and time.time() - folder.stat().st_mtime > 3600
            if (folder.name not in keep and not folder.name.startswith(".")) or stale_upload:
                shutil.rmtree(folder, ignore_errors=True)

    def _grace_s(self, replica_id: str) -> float:
        """A stopping replica may finish its longest allowed request, plus a margin, before it is killed."""
        obs = next((o for o in self.observed if o.replica_id == replica_id), None)
        rt = self.apis.get(obs.api) if obs is not None else None
        timeout = rt.spec.config.serving.request_timeout if rt is not None else self.stop_grace_s
        return max(self.stop_grace_s, timeout + REPLICA_DRAIN_MARGIN_S) + REPLICA_DRAIN_MARGIN_S

    async def _restart_gateway(self, now: float) -> None:
        if now < self._gateway_retry_at:
            return
        self._gateway_failures += 1
        if self._gateway_failures == 1:
            self.store.add_event("-", "gateway", "the gateway exited; restarting it", self.clock())
        try:
            await self.gateway.start()
        except Exception as exc:  # keep reconciling replicas; retry with backoff
            self._gateway_retry_at = now + min(30.0, 0.5 * 2**self._gateway_failures)
            log.error("gateway restart failed (attempt %d): %s", self._gateway_failures, exc)
            return
        self._gateway_failures = 0
        self._projects_cleaned_s = -PROJECT_GC_INTERVAL_S
        self.record_gateway()
        self.traffic.reset()
        self.routes.forget()

    def record_gateway(self) -> None:
        """Keep the gateway's identity in the store, so a later operator can adopt it after a crash."""
        identity = self.gateway.identity
        if identity is not None:
            self.store.put_process(ProcessRecord("gateway", "gateway", None, None, identity, self.clock()))

    def _forget_processes(self, observed: list[ReplicaObservation]) -> None:
        """Drop the store records of replicas that are gone (each was recorded when it started)."""
        seen = {o.replica_id for o in observed}
        for rid in self.actions.recorded - seen:
            self.store.delete_process(rid)
        self.actions.recorded &= seen

    def routes_table(self, observed: list[ReplicaObservation], stopping: set[str]) -> dict[str, Any]:
        now = self.mono()
        for rid, (_, at) in list(self._lost_with_node.items()):
            if now - at > LOST_WITH_NODE_KEEP_S:
                del self._lost_with_node[rid]
        apis = {
            name: route_entry(rt, [o for o in observed if o.api == name], stopping, self._api_keys.get(name, []))
            for name, rt in self.apis.items()
        }
        for rid, (api, _) in self._lost_with_node.items():
            if api in apis:
                apis[api].setdefault("lost_with_node", []).append(rid)
        return {"apis": apis, "splitters": self.splitters.routes()}

    # metrics -------------------------------------------------------------------------------------------
    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                generation = self.gateway.generation
                try:
                    stats = await self.gateway.stats()
                except (httpx.HTTPError, ValueError):
                    continue
                if generation != self.gateway.generation:
                    continue
                self.traffic.add(time.monotonic(), stats)
                self.autoscale(stats, generation)
            except Exception:  # the loop must survive anything one sample does: autoscaling depends on it
                log.exception("metrics/autoscaling tick failed")

    async def refresh_traffic(self) -> None:
        """Take a fresh gateway snapshot so that `thrifty get` right after a request counts it."""
        generation = self.gateway.generation
        try:
            stats = await self.gateway.stats()
        except (httpx.HTTPError, ValueError):
            return
        if generation == self.gateway.generation:
            self.traffic.add(time.monotonic(), stats)

    def autoscale(self, stats: dict[str, Any], generation: int) -> None:
        """One autoscaler tick for every API, from one gateway snapshot."""
        apis = {name: (rt.spec.config, rt.desired) for name, rt in self.apis.items()}
        decisions = self.autoscaler.tick(stats, generation, apis, self.mono())
        changed = False
        for name, decision in decisions.items():
            rt = self.apis[name]
            if decision.desired != rt.desired:
                summary = str(decision.reason.get("summary", f"{rt.desired} -> {decision.desired}"))
                self.store.add_event(name, "scaling", summary, self.clock(), decision.reason)
                rt.desired = decision.desired
                changed = True
        if changed:
            self._wake.set()
