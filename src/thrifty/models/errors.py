"""Errors of the model repository and cache; subclasses of the platform's error tree (thrifty.errors)."""

from __future__ import annotations

from thrifty.errors import NotFoundError, OverloadedError, ThriftyError


class ModelNameError(ThriftyError):
    """A model name or version in a request is malformed (path separators, '..', other characters)."""

    code = "invalid_model_name"


class ModelNotFoundError(NotFoundError):
    """The source has no model of that name, or the model has no such version."""

    code = "model_not_found"


class ModelLoadError(ThriftyError):
    """Downloading or loading one model version failed; other models are unaffected."""

    code = "model_load_failed"


class ModelTooLargeError(ModelLoadError):
    """The model alone is larger than the memory or disk byte budget, so it can never be cached."""

    code = "model_too_large"


class ModelCacheBusyError(OverloadedError):
    """No room could be made in time: every cached model is in use by in-flight requests.

    Retryable (503): another replica, or this one a moment later, can serve the request.
    """

    code = "model_cache_busy"
