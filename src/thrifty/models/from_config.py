"""Build a model cache from an API's ``models:`` config and its predictor (what the replica calls)."""

from __future__ import annotations

import inspect
from typing import Any

from thrifty.config.schema import ModelsConfig
from thrifty.errors import PredictorLoadError
from thrifty.models.cache import Clock, ModelCache
from thrifty.models.repository import ModelRepository
from thrifty.models.source import ModelSource


def model_cache_from_config(
    config: ModelsConfig,
    predictor: Any,
    cache_dir: str,
    *,
    clock: Clock,
    source: ModelSource | None = None,
    storage_options: dict[str, Any] | None = None,
    failure_ttl_s: float = 10.0,
    room_wait_s: float = 10.0,
) -> ModelCache:
    """A cache over ``config.source`` (or ``source``, e.g. a fake) that loads with ``predictor.load_model``.

    ``predictor.model_size(model) -> int``, when defined, gives a loaded model's size in memory.
    Raises PredictorLoadError when the predictor has no ``load_model``; ConfigError for a bad source.
    Call ``await cache.start()``, then ``await cache.preload(config.preload)``, and ``await cache.poll()``
    every ``config.poll_interval`` seconds.
    """
    load_fn = getattr(predictor, "load_model", None)
    if not callable(load_fn):
        raise PredictorLoadError(
            f"{type(predictor).__name__} has no load_model(self, path) method, which an API with "
            "'models:' needs to turn a downloaded model folder into a model object"
        )
    size_fn = getattr(predictor, "model_size", None)
    if size_fn is not None and (not callable(size_fn) or inspect.iscoroutinefunction(size_fn)):
        raise PredictorLoadError(f"{type(predictor).__name__}.model_size must be a plain (not async) method")
    return ModelCache(
        source if source is not None else ModelRepository(config.source, storage_options),
        cache_dir,
        load_fn,
        clock=clock,
        cache_size=config.cache_size,
        cache_bytes=config.cache_bytes,
        disk_cache_size=config.disk_cache_size,
        disk_cache_bytes=config.disk_cache_bytes,
        size_fn=size_fn,
        failure_ttl_s=failure_ttl_s,
        room_wait_s=room_wait_s,
    )
