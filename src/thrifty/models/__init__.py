"""Multi-model serving: a model repository (fsspec), memory and disk caches, single-flight loads."""

from thrifty.models.cache import LoadedModel, ModelCache
from thrifty.models.errors import (
    ModelCacheBusyError,
    ModelLoadError,
    ModelNameError,
    ModelNotFoundError,
    ModelTooLargeError,
)
from thrifty.models.from_config import model_cache_from_config
from thrifty.models.names import ModelKey, parse_model_ref, parse_version, validate_model_name
from thrifty.models.repository import ModelRepository
from thrifty.models.source import ModelSource

__all__ = [
    "LoadedModel",
    "ModelCache",
    "ModelCacheBusyError",
    "ModelKey",
    "ModelLoadError",
    "ModelNameError",
    "ModelNotFoundError",
    "ModelRepository",
    "ModelSource",
    "ModelTooLargeError",
    "model_cache_from_config",
    "parse_model_ref",
    "parse_version",
    "validate_model_name",
]
