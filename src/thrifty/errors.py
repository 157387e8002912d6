"""One error root for the whole platform.

Every error has a stable ``code`` (shown to users, safe to match on), an HTTP status used when the error
crosses the admin API or the gateway, and a process exit code used by the CLI. Library code raises; only
``thrifty.cli`` turns errors into exit codes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ThriftyError(Exception):
    """Root of every error thrifty raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class ConfigError(ThriftyError):
    """A thrifty.yaml (or a deploy request) is invalid; nothing was changed."""

    code = "config_invalid"
    http_status = 400
    exit_code = 2


class NotFoundError(ThriftyError):
    code = "not_found"
    http_status = 404
    exit_code = 3


class AuthError(ThriftyError):
    code = "unauthorized"
    http_status = 401
    exit_code = 4


class ConflictError(ThriftyError):
    code = "conflict"
    http_status = 409
    exit_code = 5


class PlatformNotRunningError(ThriftyError):
    """The CLI could not reach the operator."""

    code = "platform_not_running"
    http_status = 503
    exit_code = 6


class PlatformAlreadyRunningError(ThriftyError):
    code = "platform_already_running"
    http_status = 409
    exit_code = 7


class DeployFailedError(ThriftyError):
    """An API did not become live (e.g. the predictor's __init__ raised)."""

    code = "deploy_failed"
    http_status = 500
    exit_code = 8


class PredictorLoadError(ThriftyError):
    code = "predictor_load_failed"
    http_status = 500
    exit_code = 8


class OverloadedError(ThriftyError):
    code = "overloaded"
    http_status = 503
    exit_code = 9


class TimeoutExceededError(ThriftyError):
    code = "timeout"
    http_status = 504
    exit_code = 10


class RequestError(ThriftyError):
    """A prediction request was rejected by the API (4xx/5xx); carries the server's answer."""

    code = "request_failed"
    http_status = 400
    exit_code = 11


_BY_CODE: dict[str, type[ThriftyError]] = {
    cls.code: cls
    for cls in (
        ThriftyError,
        ConfigError,
        NotFoundError,
        AuthError,
        ConflictError,
        PlatformNotRunningError,
        PlatformAlreadyRunningError,
        DeployFailedError,
        PredictorLoadError,
        OverloadedError,
        TimeoutExceededError,
        RequestError,
    )
}


def error_from_dict(body: dict[str, Any]) -> ThriftyError:
    """Rebuild an error sent over the admin API by :meth:`ThriftyError.to_dict`."""
    cls = _BY_CODE.get(str(body.get("error", "")), ThriftyError)
    return cls(str(body.get("message", "unknown error")), details=body.get("details") or None)
