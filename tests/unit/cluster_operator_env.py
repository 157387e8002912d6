"""The real operator on a cluster, driven tick by tick on a virtual clock with the fake engine, gateway and cloud
(no sockets, no Ray): shared by the operator's cluster and spot tests (imported by file name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thrifty.clouds.fake import FakeCloud
from thrifty.config.cluster import ClusterConfig
from thrifty.control.cluster import Cluster
from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.engines.fake import FakeEngine
from thrifty.project_archive import pack

PREDICTOR = "class Predictor:\n    def predict(self, payload):\n        return 1\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClusterOperatorEnv:
    def __init__(self, tmp: Path, cluster: dict[str, Any]) -> None:
        self.tmp = tmp
        self.clock = Clock()
        home = Home(tmp / "home")
        home.ensure()
        self.store = Store(home.db_path)
        self.engine = FakeEngine(self.clock, ready_after_s=1.0)
        self.gateway = FakeGateway()
        self.cloud = FakeCloud(self.clock, launch_delay_s=2.0)
        self.cluster = Cluster(ClusterConfig.model_validate(cluster), self.cloud, self.store, self.clock)
        self.op = Operator(home, self.store, self.engine, self.gateway, clock=self.clock, mono=self.clock,
                           cluster=self.cluster, placing=self.engine)  # fmt: skip
        self.deploys = 0

    async def deploy_yaml(self, yaml: str) -> None:
        self.deploys += 1
        folder = self.tmp / f"p{self.deploys}"
        folder.mkdir()
        (folder / "thrifty.yaml").write_text(yaml)
        (folder / "predictor.py").write_text(PREDICTOR)
        await self.op.deploy(pack(folder))

    async def tick(self, seconds: float = 0.5, times: int = 1) -> None:
        for _ in range(times):
            self.clock.now += seconds
            await self.op.reconcile_once(self.clock.now)

    def ready_replicas(self, api: str | None = None) -> list[str]:
        return [o.replica_id for o in self.engine.observe() if o.state == "ready" and (api is None or o.api == api)]
