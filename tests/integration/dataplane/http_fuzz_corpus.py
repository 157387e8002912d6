"""Malformed HTTP/1.1 requests for the fuzz test: each a name, raw bytes, and how many well-formed requests
(``GET /healthz``) come before the garbage on the same connection.

Not here: runs of spaces between the request line's words, which RFC 9112 section 3 lets a server accept.

Every entry must draw exactly one 4xx (or 505) after the answers to its well-formed prefix, or a close, and
never a 2xx for the garbage itself. Entries that stop half-way get their answer from the head or body timeout.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    name: str
    data: bytes
    leading: int = 0  # well-formed requests before the garbage, each answered 200


OK = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
H = b"Host: x\r\n"


def _req(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return line + b"\r\n" + H + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def _post(*headers: bytes, body: bytes = b"") -> bytes:
    return _req(b"POST /nope HTTP/1.1", *headers, body=body)


REQUEST_LINES = [
    Case("empty-line-then-garbage", b"\r\n\r\nxyz\r\n\r\n"),
    Case("lowercase-method", _req(b"get /healthz HTTP/1.1")),
    Case("unknown-method", _req(b"FROB /healthz HTTP/1.1")),
    Case("method-with-digit", _req(b"G3T /healthz HTTP/1.1")),
    Case("long-method", _req(b"G" * 5000 + b" /healthz HTTP/1.1")),
    Case("no-target", _req(b"GET HTTP/1.1")),
    Case("no-version-http09", b"GET /healthz\r\n\r\n"),
    Case("no-version-http09-post", b"POST /healthz\r\n\r\n"),
    Case("target-without-slash", _req(b"GET healthz HTTP/1.1")),
    Case("asterisk-target", _req(b"GET * HTTP/1.1")),
    Case("options-asterisk", _req(b"OPTIONS * HTTP/1.1")),
    Case("authority-target", _req(b"GET example.com:80 HTTP/1.1")),
    Case("ftp-absolute-target", _req(b"GET ftp://example.com/healthz HTTP/1.1")),
    Case("absolute-no-host", _req(b"GET http:///healthz HTTP/1.1")),
    Case("trailing-space-after-version", _req(b"GET /healthz HTTP/1.1 ")),
    Case("tab-separator", _req(b"GET\t/healthz\tHTTP/1.1")),
    Case("space-in-target", _req(b"GET /heal thz HTTP/1.1")),
    Case("version-http1x", _req(b"GET /healthz HTTP/1.x")),
    Case("version-http11-nodot", _req(b"GET /healthz HTTP/11")),
    Case("version-https", _req(b"GET /healthz HTTPS/1.1")),
    Case("version-lowercase", _req(b"GET /healthz http/1.1")),
    Case("version-http2", _req(b"GET /healthz HTTP/2.0")),
    Case("version-http3", _req(b"GET /healthz HTTP/3.0")),
    Case("version-9-9", _req(b"GET /healthz HTTP/9.9")),
    Case("trailing-token", _req(b"GET /healthz HTTP/1.1 extra")),
    Case("lf-only", b"GET /healthz HTTP/1.1\nHost: x\n\n"),
    Case("cr-only", b"GET /healthz HTTP/1.1\rHost: x\r\r"),
    Case("del-in-target", _req(b"GET /\x7fhealthz HTTP/1.1")),
    Case("control-char-in-target", _req(b"GET /\x01healthz HTTP/1.1")),
    Case("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 40),
    Case("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    Case("ssh-banner", b"SSH-2.0-OpenSSH_9.0\r\n\r\n"),
    Case("json-instead-of-request", b'{"instances": [1, 2, 3]}\r\n\r\n'),
    Case("binary-garbage", bytes(range(256)) * 4),
    Case("only-crlfs-then-version", b"\r\n\r\n\r\nHTTP/1.1\r\n\r\n"),
    Case("response-line-as-request", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
]

HEADERS = [
    Case("space-in-header-name", _post(b"Content Length: 0")),
    Case("space-before-colon", _post(b"Content-Length : 0")),
    Case("empty-header-name", _post(b": value")),
    Case("header-without-colon", _post(b"NoColonHere")),
    Case("paren-in-header-name", _post(b"X(y): 1")),
    Case("at-in-header-name", _post(b"X@y: 1")),
    Case("brace-in-header-name", _post(b"X{y}: 1")),
    Case("slash-in-header-name", _post(b"X/y: 1")),
    Case("nonascii-header-name", _post("Ünïcode: 1".encode())),
    Case("nul-in-header-name", _post(b"X-\x00: 1")),
    Case("nul-in-header-value", _post(b"X-A: a\x00b")),
    Case("cr-in-header-value", _post(b"X-A: a\rb")),
    Case("bare-lf-in-header-value", _post(b"X-A: a\nb")),
    Case("control-in-header-value", _post(b"X-A: a\x01b")),
    Case("obs-fold-space", _post(b"X-A: a", b" folded")),
    Case("obs-fold-tab", _post(b"X-A: a", b"\tfolded")),
    Case("obs-fold-content-length", _post(b"Content-Length:", b" 0")),
    Case("leading-whitespace-first-header", b"POST /nope HTTP/1.1\r\n Host: x\r\n\r\n"),
    Case("header-line-is-crlf-garbage", _post(b"\x00\x00\x00")),
    Case("upgrade-websocket", _req(b"GET /healthz HTTP/1.1", b"Connection: Upgrade", b"Upgrade: websocket")),
    Case("upgrade-h2c", _req(b"GET /healthz HTTP/1.1", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c")),
    Case("upgrade-without-connection", _req(b"GET /healthz HTTP/1.1", b"Upgrade: websocket")),
    Case("connect", _req(b"CONNECT example.com:443 HTTP/1.1")),
    Case("connect-to-path", _req(b"CONNECT /healthz HTTP/1.1")),
]

LENGTHS = [
    Case("cl-and-te", _post(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n")),
    Case("te-and-cl", _post(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n")),
    Case("two-content-lengths", _post(b"Content-Length: 1", b"Content-Length: 2", body=b"ab")),
    Case("two-equal-content-lengths", _post(b"Content-Length: 1", b"Content-Length: 1", body=b"a")),
    Case("content-length-list", _post(b"Content-Length: 1, 1", body=b"a")),
    Case("negative-content-length", _post(b"Content-Length: -1")),
    Case("plus-content-length", _post(b"Content-Length: +1", body=b"a")),
    Case("hex-content-length", _post(b"Content-Length: 0x10")),
    Case("word-content-length", _post(b"Content-Length: ten")),
    Case("spaced-content-length", _post(b"Content-Length: 1 2")),
    Case("empty-content-length", _post(b"Content-Length: ")),
    Case("absurd-content-length", _post(b"Content-Length: 99999999999999999999999999")),
    Case("int64-content-length", _post(b"Content-Length: 18446744073709551616")),
    Case("content-length-over-limit", _post(b"Content-Length: 2000000000")),
    Case("te-gzip-only", _post(b"Transfer-Encoding: gzip", body=b"abc")),
    Case("te-chunked-then-gzip", _post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n")),
    Case("te-xchunked", _post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n")),
    Case("te-identity", _post(b"Transfer-Encoding: identity", body=b"abc")),
    Case("te-two-headers-chunked-last", _post(b"Transfer-Encoding: gzip", b"Transfer-Encoding: foo")),
    Case("te-nul", _post(b"Transfer-Encoding: chunked\x00", body=b"0\r\n\r\n")),
]

CHUNKS = [
    Case("chunk-size-not-hex", _post(b"Transfer-Encoding: chunked", body=b"zz\r\nab\r\n0\r\n\r\n")),
    Case("chunk-size-negative", _post(b"Transfer-Encoding: chunked", body=b"-1\r\nab\r\n0\r\n\r\n")),
    Case("chunk-size-overflow", _post(b"Transfer-Encoding: chunked", body=b"fffffffffffffffffffff\r\n")),
    Case("chunk-size-0x", _post(b"Transfer-Encoding: chunked", body=b"0x2\r\nab\r\n0\r\n\r\n")),
    Case("chunk-size-space-inside", _post(b"Transfer-Encoding: chunked", body=b"1 2\r\nab\r\n0\r\n\r\n")),
    Case("chunk-data-too-long", _post(b"Transfer-Encoding: chunked", body=b"2\r\nabcdef\r\n0\r\n\r\n")),
    Case("chunk-missing-crlf", _post(b"Transfer-Encoding: chunked", body=b"2\r\nabX0\r\n\r\n")),
    Case("chunk-lf-only", _post(b"Transfer-Encoding: chunked", body=b"2\nab\n0\n\n")),
    Case("chunk-empty-size", _post(b"Transfer-Encoding: chunked", body=b"\r\nab\r\n0\r\n\r\n")),
    Case("chunk-nul-size", _post(b"Transfer-Encoding: chunked", body=b"\x00\r\nab\r\n0\r\n\r\n")),
    Case("chunk-extension-garbage", _post(b"Transfer-Encoding: chunked", body=b"2;\x00=\x01\r\nab\r\n0\r\n\r\n")),
    Case("chunk-trailer-garbage", _post(b"Transfer-Encoding: chunked", body=b"0\r\nbad trailer\r\n\r\n")),
    Case("chunk-no-last-chunk", _post(b"Transfer-Encoding: chunked", body=b"2\r\nab\r\n")),
    Case("chunk-size-huge-then-stop", _post(b"Transfer-Encoding: chunked", body=b"7fffffff\r\nabc")),
]

INCOMPLETE = [
    Case("request-line-only", b"GET /healthz HTTP/1.1\r\n"),
    Case("half-request-line", b"GET /heal"),
    Case("half-header", b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Le"),
    Case("body-short-of-length", _post(b"Content-Length: 100", body=b"abc")),
]

OVERSIZED = [
    Case("huge-target", _req(b"GET /" + b"a" * 70_000 + b" HTTP/1.1")),
    Case("huge-header-value", _post(b"X-Big: " + b"v" * 70_000)),
    Case("huge-header-name", _post(b"X" * 70_000 + b": 1")),
    Case("many-headers", _post(*[b"X-%d: %s" % (i, b"v" * 60) for i in range(1200)])),
    Case("huge-query", _req(b"GET /healthz?" + b"q=1&" * 20_000 + b" HTTP/1.1")),
]

NULS = [
    Case("nul-only", b"\x00" * 64),
    Case("nul-in-method", _req(b"G\x00T /healthz HTTP/1.1")),
    Case("nul-in-target", _req(b"GET /healthz\x00 HTTP/1.1")),
    Case("nul-in-version", _req(b"GET /healthz HTTP/1.\x001")),
    Case("nul-before-request", b"\x00" + OK),
]

PIPELINED = [
    Case("ok-then-garbage", OK + b"GARBAGE\r\n\r\n", leading=1),
    Case("two-ok-then-garbage", OK + OK + b"\x00\x01\x02\r\n\r\n", leading=2),
    Case("ok-then-connect", OK + _req(b"CONNECT example.com:443 HTTP/1.1"), leading=1),
    Case("ok-then-upgrade", OK + _req(b"GET / HTTP/1.1", b"Connection: Upgrade", b"Upgrade: websocket"), leading=1),
    Case("ok-then-http09", OK + b"GET /healthz\r\n\r\n", leading=1),
    Case("ok-then-cl-te", OK + _post(b"Content-Length: 3", b"Transfer-Encoding: chunked"), leading=1),
    Case("ok-then-bad-chunk", OK + _post(b"Transfer-Encoding: chunked", body=b"xx\r\n"), leading=1),
    Case("ok-then-obs-fold", OK + _post(b"X-A: a", b" b"), leading=1),
    Case("ok-then-huge-header", OK + _post(b"X-Big: " + b"v" * 70_000), leading=1),
    Case("ok-then-half-head", OK + b"GET /heal", leading=1),
    Case("smuggle-cl-body-is-request", _post(b"Content-Length: 0", b"Transfer-Encoding: chunked", body=OK)),
    Case("crlf-crlf-garbage-after-ok", OK + b"\r\n\r\n\x00", leading=1),
]

CORPUS: list[Case] = REQUEST_LINES + HEADERS + LENGTHS + CHUNKS + INCOMPLETE + OVERSIZED + NULS + PIPELINED
