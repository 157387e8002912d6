"""Helpers for the multi-model integration tests: a model folder and in-process multi-model replicas."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from dataplane_helpers import PREDICTORS, LoopbackServer

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_models import ModelServing, model_predictor, open_model_serving
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner


def put_model(source: Path, name: str, version: int, **extra: Any) -> None:
    folder = source / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"name": name, "version": version, **extra}))


def model_api(source: Path, cls: str = "Models", name: str = "mm", **fields: Any) -> ApiConfig:
    """A multi-model ApiConfig over ``source``; ``models``, ``serving`` and ``config`` override defaults."""
    return ApiConfig.model_validate(
        {
            "name": name,
            "predictor": {"path": "multimodel.py", "class": cls, "config": fields.pop("config", {})},
            "serving": fields.pop("serving", {}),
            "models": {"source": str(source), "cache_size": 4, **fields.pop("models", {})},
        }
    )


class ModelReplica(LoopbackServer):
    """A ready multi-model replica on 127.0.0.1:0, as replica_main builds it."""

    def __init__(self, app: ReplicaApp, server: HttpServer, models: ModelServing, runner: ThreadRunner, inst: Any):
        self.app = app
        self.server = server
        self.models = models
        self.runner = runner
        self.instance = inst

    @property
    def id(self) -> str:
        return self.app.replica_id

    @classmethod
    async def start(cls, api: ApiConfig, replica_id: str, cache_dir: Path | None) -> ModelReplica:
        predictor = load_predictor(api, PREDICTORS)
        models = open_model_serving(api, predictor, None if cache_dir is None else str(cache_dir))
        runner = ThreadRunner(api.serving.max_concurrency)
        runner.start(asyncio.get_running_loop())
        app = ReplicaApp(api, replica_id)
        server = HttpServer(app, host="127.0.0.1", port=0)
        await server.start()
        await models.start()
        app.set_scheduler(PredictScheduler(model_predictor(predictor), api.serving, runner), models)
        return cls(app, server, models, runner, predictor.instance)

    async def stop(self) -> None:
        self.instance_gate_open()
        await self.server.stop(0.5)
        await self.models.close()
        self.runner.stop()

    def instance_gate_open(self) -> None:
        gate = getattr(self.instance, "gate", None)
        if gate is not None:
            gate.set()
