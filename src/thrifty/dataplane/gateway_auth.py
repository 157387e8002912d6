"""API-key checks at the gateway: ``Authorization: Bearer <key>`` against an API's (or ``/metrics``') keys.

Keys are stored as salted sha256 hashes (``api_key_hashes``) and compared in constant time over all of them.
A request without a matching key gets 401 with ``WWW-Authenticate: Bearer``; the key itself is never
forwarded to a replica (``gateway_proxy`` strips the header for an API behind keys).
"""

from __future__ import annotations

from thrifty.dataplane.api_key_hashes import key_matches
from thrifty.dataplane.http_messages import Request, Response, error_response


def bearer_matches(request: Request, key_hashes: tuple[str, ...]) -> bool:
    auth = request.headers.get(b"authorization")
    if auth is None or auth[:7].lower() != b"bearer ":
        return False
    return key_matches(auth[7:], key_hashes)  # salted hashes, constant time over all of them


def unauthorized(rid: bytes) -> Response:
    return error_response(401, "unauthorized", "missing or wrong API key", rid, [(b"www-authenticate", b"Bearer")])
