"""Request bodies into predictor payloads, and predictor results into response bodies.

- JSON when the Content-Type says so (``application/json``, ``*+json``), or when there is no useful
  Content-Type (none, or curl's default ``application/x-www-form-urlencoded``) and the body starts like a
  JSON object or array; malformed JSON is the client's error (400). An empty JSON body is ``None``.
- ``text/*`` -> ``str`` (the charset parameter, default UTF-8).
- anything else -> ``bytes``.

Results: ``bytes`` -> application/octet-stream, ``str`` -> text/plain, anything else -> JSON (orjson, with
numpy arrays and dataclasses understood).
"""

from __future__ import annotations

from typing import Any

import orjson

from thrifty.dataplane.http_messages import JSON, OCTETS, TEXT

_JSON_START = frozenset(b"{[")
_WS = b" \t\r\n"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class PayloadError(ValueError):
    """The body does not match its Content-Type (the client's error: 400)."""


def _looks_like_json(body: bytes) -> bool:
    stripped = body.lstrip(_WS)
    return bool(stripped) and stripped[0] in _JSON_START


def decode_payload(content_type: bytes | None, body: bytes) -> Any:
    if content_type is None or content_type.startswith(b"application/x-www-form-urlencoded"):
        if not body:
            return None
        if _looks_like_json(body):
            return _json(body)
        return body
    mime = content_type.split(b";", 1)[0].strip().lower()
    if mime == b"application/json" or mime.endswith(b"+json"):
        return _json(body) if body else None
    if mime.startswith(b"text/"):
        charset = "utf-8"
        for param in content_type.split(b";")[1:]:
            name, _, value = param.strip().partition(b"=")
            if name.lower() == b"charset" and value:
                charset = value.strip(b"\"'").decode("ascii", "replace")
        try:
            return body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise PayloadError(f"body is not valid {charset} text: {exc}") from exc
    return body


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from exc


def encode_result(result: Any) -> tuple[bytes, bytes]:
    """-> (body, content type). Raises TypeError when the result cannot be sent."""
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result), OCTETS
    if isinstance(result, str):
        return result.encode("utf-8"), TEXT
    try:
        return orjson.dumps(result, option=_ORJSON_OPTIONS), JSON
    except orjson.JSONEncodeError as exc:
        raise TypeError(
            f"the predictor returned a {type(result).__name__}, which is not JSON-serialisable: {exc}"
        ) from exc
