"""One error root for the whole platform, and the one table of its error codes.

Every error has a stable ``code`` (shown to users, safe to match on), an HTTP status used when the error
crosses the admin API or the gateway, and a process exit code used by the CLI. All three, with a one-line
meaning, are declared once, in :data:`ERROR_CODES`: a ``ThriftyError`` subclass names only its ``code`` and
takes its status and exit code from the table (a code missing from it fails at import), and the data plane's
literal codes (``error_response(...)``) are checked against it by ``tests/unit/test_error_codes.py``.
Library code raises; only ``thrifty.cli`` turns errors into exit codes.

``python -m thrifty.errors`` prints the table as Markdown (the README's error-code table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    http_status: int
    # Unique per code. None: the code is only ever an HTTP answer of the data plane, never a raised error;
    # the CLI reports such answers as ``request_failed``.
    exit_code: int | None
    meaning: str


ERROR_CODES: tuple[ErrorCode, ...] = (
    # Raised as ThriftyError subclasses (CLI, operator, admin API, data plane).
    ErrorCode("internal", 500, 1, "An unexpected failure inside thrifty (a bug); the message says where."),
    ErrorCode("config_invalid", 400, 2, "thrifty.yaml or a deploy request is invalid; nothing was changed."),
    ErrorCode("not_found", 404, 3, "No such API, replica or endpoint."),
    ErrorCode("unauthorized", 401, 4, "Missing or wrong admin token or API key."),
    ErrorCode("conflict", 409, 5, "The request conflicts with the platform's current state."),
    ErrorCode("platform_not_running", 503, 6, "The CLI could not reach the operator; start it with `thrifty up`."),
    ErrorCode("platform_already_running", 409, 7, "`thrifty up` found an operator already running in this home."),
    ErrorCode("deploy_failed", 500, 8, "An API did not become live (e.g. its predictor's `__init__` raised)."),
    ErrorCode("overloaded", 503, 9, "The replica's queue is full; retry after Retry-After."),
    ErrorCode("timeout", 504, 10, "No answer within the API's request timeout (or the operator's)."),
    ErrorCode("request_failed", 400, 11, "A request was rejected; the message carries the server's answer."),
    ErrorCode("predictor_load_failed", 500, 12, "The predictor could not be imported or constructed."),
    ErrorCode("invalid_model_name", 400, 13, "A model name or version is malformed (separators, '..', characters)."),
    ErrorCode("model_not_found", 404, 14, "The model repository has no such model, or no such version of it."),
    ErrorCode("model_load_failed", 500, 15, "Downloading or loading one model version failed; others still serve."),
    ErrorCode("model_too_large", 500, 16, "The model alone exceeds the cache's memory or disk budget."),
    ErrorCode("model_cache_busy", 503, 17, "Every cached model is in use, so no room could be made; retryable."),
    ErrorCode("predictor_error", 500, 18, "The predictor raised or returned something unusable; see the replica log."),
    ErrorCode("gateway_start_failed", 500, 19, "The operator could not start its gateway process."),
    ErrorCode("upstream_failed", 502, 20, "The replica failed mid-request (closed, reset or garbled its answer)."),
    ErrorCode("upstream_unreachable", 502, 21, "(internal) The gateway could not connect to a replica."),
    ErrorCode("upstream_reset", 502, 22, "(internal) A replica closed the connection before answering."),
    ErrorCode("upstream_bad_response", 502, 23, "(internal) A replica's answer was not valid HTTP."),
    ErrorCode("upstream_timeout", 504, 24, "(internal) A replica did not answer in time."),
    ErrorCode("port_in_use", 409, 25, "The port asked for is held by another process; the message names it."),
    ErrorCode("capacity_unavailable", 503, 26, "A node pool has no capacity now; provisioning tries another pool."),
    # Only ever HTTP answers of the gateway and the replicas (or a replica's status file).
    ErrorCode("bad_request", 400, None, "Malformed HTTP, or a protocol upgrade (not supported)."),
    ErrorCode("headers_too_large", 431, None, "The request line or headers are too large."),
    ErrorCode("http_version_not_supported", 505, None, "Only HTTP/1.0 and HTTP/1.1 are served."),
    ErrorCode("request_timeout", 408, None, "The request head or body did not arrive in time."),
    ErrorCode("payload_too_large", 413, None, "The request body exceeds the API's body limit."),
    ErrorCode("method_not_allowed", 405, None, "Wrong HTTP method (predictions are POSTs)."),
    ErrorCode("invalid_payload", 400, None, "The request body does not decode as the content type says."),
    ErrorCode("invalid_routes", 400, None, "(internal) The operator pushed an invalid route table to the gateway."),
    ErrorCode("api_not_found", 404, None, "No API of that name is deployed (or it was deleted meanwhile)."),
    ErrorCode("gateway_starting", 503, None, "The gateway has no route table yet (just started); retryable."),
    ErrorCode("model_required", 400, None, "A multi-model API needs the model in the path: /<api>/<model>[/<ver>]."),
    ErrorCode("not_ready", 503, None, "The replica's predictor is still loading; retry after Retry-After."),
    ErrorCode("draining", 503, None, "The replica is shutting down; the gateway retries elsewhere."),
    ErrorCode("no_replica_available", 503, None, "No replica of the API can take the request now; retryable."),
    ErrorCode("cold_start_queue_full", 503, None, "The API is starting from zero and holds its maximum of requests."),
    ErrorCode("cold_start_timeout", 503, None, "No replica became ready within the API's cold-start timeout."),
    ErrorCode("replica_start_failed", 500, None, "(internal) The Ray actor could not start its replica process."),
    ErrorCode("spec_invalid", 500, None, "(internal) A replica could not read the spec the operator wrote for it."),
    ErrorCode("secret_unreadable", 500, None, "(internal) A replica could not read the platform secret."),
)

BY_CODE: dict[str, ErrorCode] = {e.code: e for e in ERROR_CODES}


def markdown_table() -> str:
    """The README's error-code table, generated from :data:`ERROR_CODES`."""
    rows = ["| code | HTTP | exit | meaning |", "|---|---|---|---|"]
    for e in ERROR_CODES:
        exit_code = "-" if e.exit_code is None else str(e.exit_code)
        meaning = e.meaning.replace("|", "\\|")
        rows.append(f"| `{e.code}` | {e.http_status} | {exit_code} | {meaning} |")
    return "\n".join(rows) + "\n"


class ThriftyError(Exception):
    """Root of every error thrifty raises on purpose.

    A subclass sets only ``code``; its ``http_status`` and ``exit_code`` come from :data:`ERROR_CODES`.
    """

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = BY_CODE["internal"].http_status
    exit_code: ClassVar[int] = BY_CODE["internal"].exit_code or 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("http_status", "exit_code"):
            if attr in cls.__dict__:
                raise TypeError(f"{cls.__qualname__} sets {attr}: declare it in thrifty.errors.ERROR_CODES instead")
        entry = BY_CODE.get(cls.code)
        if entry is None or entry.exit_code is None:
            raise TypeError(
                f"{cls.__qualname__}.code = {cls.code!r} is not a raisable code of thrifty.errors.ERROR_CODES"
            )
        cls.http_status = entry.http_status
        cls.exit_code = entry.exit_code

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


class NotFoundError(ThriftyError):
    code = "not_found"


class AuthError(ThriftyError):
    code = "unauthorized"


class ConflictError(ThriftyError):
    code = "conflict"


class PlatformNotRunningError(ThriftyError):
    """The CLI could not reach the operator."""

    code = "platform_not_running"


class PlatformAlreadyRunningError(ThriftyError):
    code = "platform_already_running"


class DeployFailedError(ThriftyError):
    """An API did not become live (e.g. the predictor's __init__ raised)."""

    code = "deploy_failed"


class PredictorLoadError(ThriftyError):
    code = "predictor_load_failed"


class OverloadedError(ThriftyError):
    code = "overloaded"


class TimeoutExceededError(ThriftyError):
    code = "timeout"


class PredictorError(ThriftyError):
    """The predictor failed a request: it raised, or returned or yielded something unusable (details: log only)."""

    code = "predictor_error"


class RequestError(ThriftyError):
    """A prediction request was rejected by the API (4xx/5xx); carries the server's answer."""

    code = "request_failed"


_CLASS_BY_CODE: dict[str, type[ThriftyError]] = {
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
    cls = _CLASS_BY_CODE.get(str(body.get("error", "")), ThriftyError)
    return cls(str(body.get("message", "unknown error")), details=body.get("details") or None)


if __name__ == "__main__":
    print(markdown_table(), end="")
