"""Python client for a running thrifty platform. The CLI is built on it; every CLI verb is a method here.

from thrifty import Client
client = Client()                      # finds the local platform through $THRIFTY_HOME
client.deploy("examples/iris", wait=True)
client.predict("iris", {"sepal_length": 5.1, ...})
for chunk in client.stream("textgen", {"prompt": "It is"}):   # a generator predictor, chunk by chunk
    print(chunk.decode(), end="", flush=True)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from thrifty.config.limits import Limits
from thrifty.config.loader import load_config
from thrifty.config.schema import ProjectConfig
from thrifty.control.home import Home, default_home
from thrifty.errors import (
    ConfigError,
    DeployFailedError,
    PlatformNotRunningError,
    RequestError,
    TimeoutExceededError,
    error_from_dict,
)
from thrifty.project_archive import pack


def read_operator_file(home: Home) -> dict[str, Any] | None:
    try:
        data = orjson.loads(home.operator_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _settled(api: dict[str, Any], revision: str | None) -> bool:
    if revision is not None and api["revision"] != revision:
        return False
    if api["status"] == "scaled to zero":
        return True
    return bool(api["status"] == "live" and api["replicas"]["ready"] >= api["replicas"]["requested"])


class Client:
    def __init__(self, home: str | Path | None = None, *, timeout_s: float = 60.0) -> None:
        self.home = Home(Path(home) if home is not None else default_home())
        self.timeout_s = timeout_s
        self._admin: httpx.Client | None = None
        self._gateway: httpx.Client | None = None
        self._info: dict[str, Any] | None = None

    # connection ------------------------------------------------------------------------------------
    def _connect(self) -> httpx.Client:
        if self._admin is not None:
            return self._admin
        info = read_operator_file(self.home)
        token = self.home.read_token()
        if info is None or token is None:
            raise PlatformNotRunningError(
                f"no thrifty platform is running for {self.home.root} (start one with `thrifty up`)"
            )
        self._info = info
        self._admin = httpx.Client(
            base_url=f"http://127.0.0.1:{info['admin_port']}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=self.timeout_s,
        )
        return self._admin

    @property
    def gateway_url(self) -> str:
        self._connect()
        assert self._info is not None  # set by _connect
        return f"http://{self._info['gateway_host']}:{self._info['gateway_port']}"

    def close(self) -> None:
        for c in (self._admin, self._gateway):
            if c is not None:
                c.close()
        self._admin = self._gateway = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        client = self._connect()
        try:
            resp = client.request(method, path, **kwargs)
        except httpx.ConnectError:
            self.close()
            raise PlatformNotRunningError(
                f"the thrifty platform of {self.home.root} does not answer (stopped or crashed?); "
                "start it with `thrifty up`"
            ) from None
        except httpx.TimeoutException:
            raise TimeoutExceededError(f"the operator did not answer {method} {path} in {self.timeout_s}s") from None
        body = orjson.loads(resp.content) if resp.content else {}
        if resp.status_code >= 400:
            raise error_from_dict(body if isinstance(body, dict) else {"message": resp.text})
        return body

    # platform --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/status"))

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown")

    # APIs ------------------------------------------------------------------------------------------
    @staticmethod
    def validate(path: str | Path = ".") -> tuple[Path, ProjectConfig]:
        """Validate a project's thrifty.yaml locally (raises ConfigError with every problem)."""
        return load_config(path)

    def deploy(
        self,
        path: str | Path = ".",
        *,
        wait: bool = False,
        timeout_s: float = 300.0,
        on_progress: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        """Validate locally, upload the project folder, and (with ``wait``) block until its APIs are live.

        The config and the folder are checked against the THRIFTY_MAX_* limits before anything is sent.
        """
        limits = Limits.from_env()
        config_file, config = load_config(path, limits)
        root = config_file.parent
        for i, api in enumerate(config.apis):
            if not (root / api.predictor.path).is_file():
                raise ConfigError(
                    f"{config_file}: apis[{i}].predictor.path = {api.predictor.path!r}: no such file in {root}"
                )
        result = dict(self._call("POST", "/v1/deploy", params={"config": config_file.name}, content=pack(root, limits)))
        if wait:
            revisions = {a["name"]: a["revision"] for a in result["apis"]}
            result["apis"] = self.wait(
                list(revisions), timeout_s=timeout_s, on_progress=on_progress, revisions=revisions
            )
        return result

    def wait(
        self,
        names: list[str],
        *,
        timeout_s: float = 300.0,
        on_progress: Callable[[list[dict[str, Any]]], None] | None = None,
        revisions: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll until every named API is live (at the given revisions); raise DeployFailedError on an error."""
        deadline = time.monotonic() + timeout_s
        while True:
            apis = [self.get(n) for n in names]
            if on_progress is not None:
                on_progress(apis)
            failed = [a for a in apis if a["status"] == "error"]
            if failed:
                lines = []
                for a in failed:
                    err = a.get("error") or {}
                    lines.append(f"{a['name']}: {err.get('message', 'failed')}")
                    if err.get("log"):
                        lines.append(f"  log: {err['log']}")
                raise DeployFailedError("\n".join(lines), details={"apis": failed})
            if all(_settled(a, (revisions or {}).get(a["name"])) for a in apis):
                return apis
            if time.monotonic() > deadline:
                raise TimeoutExceededError(
                    f"not live after {timeout_s:.0f}s: "
                    + ", ".join(f"{a['name']} ({a['status']})" for a in apis if a["status"] != "live")
                )
            time.sleep(0.25)

    def list_apis(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/apis")["apis"])

    def overview(self) -> dict[str, Any]:
        """{"apis": [...], "splitters": [...]} in one call (what `thrifty get` shows)."""
        return dict(self._call("GET", "/v1/apis"))

    def list_splitters(self) -> list[dict[str, Any]]:
        """The deployed splitters with per-backend figures (requests, error rate, p50/p99) and canary progress."""
        return list(self._call("GET", "/v1/apis").get("splitters", []))

    def get(self, name: str) -> dict[str, Any]:
        """An API (its detail), or a splitter (``"kind": "splitter"``, its backends' figures)."""
        return dict(self._call("GET", f"/v1/apis/{name}"))

    def delete(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/v1/apis/{name}"))

    def refresh(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/apis/{name}/refresh"))

    def events(self, name: str | None = None, *, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Events of one API or splitter; without a name, every event (the platform's too)."""
        params: dict[str, Any] = {"limit": limit}
        if kind:
            params["kind"] = kind
        path = f"/v1/apis/{name}/events" if name is not None else "/v1/events"
        return list(self._call("GET", path, params=params)["events"])

    def cluster_info(self) -> dict[str, Any]:
        """The nodes (pool, spot or on-demand, $/h, CPU/memory/GPU used and total, age) and the cluster's $/h."""
        return dict(self._call("GET", "/v1/cluster"))

    def cluster_events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Node launches, joins, releases, losses and consolidations, with their reason records."""
        return list(self._call("GET", "/v1/cluster/events", params={"limit": limit})["events"])

    def cluster_preempt(self, node: str, notice_s: float) -> dict[str, Any]:
        """Reclaim a node as the spot market would (simulated provider): a notice, the node gone ``notice_s``
        later (0: a hard kill, no notice)."""
        return dict(self._call("POST", f"/v1/cluster/nodes/{node}/preempt", json={"notice_s": notice_s}))

    def cluster_rebalance(self, node: str) -> dict[str, Any]:
        """Post a rebalance recommendation for a node (simulated provider)."""
        return dict(self._call("POST", f"/v1/cluster/nodes/{node}/rebalance"))

    def cluster_capacity(self, pool: str, launches: int | None) -> dict[str, Any]:
        """How many more nodes a pool can give (None: unlimited; simulated provider)."""
        return dict(self._call("POST", f"/v1/cluster/pools/{pool}/capacity", json={"launches": launches}))

    def cluster_chaos(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Start (or, with no pools, stop) the random spot market on the running platform (simulated provider)."""
        return dict(self._call("POST", "/v1/cluster/chaos", json=settings))

    def read_logs(self, name: str, *, cursor: dict[str, int] | None = None, tail: int = 100) -> dict[str, Any]:
        """One read: {"lines": [{"replica", "line"}], "cursor": ...}; pass the cursor back to get only new lines."""
        params: dict[str, Any] = {"tail": tail}
        if cursor is not None:
            params["cursor"] = orjson.dumps(cursor).decode()
        return dict(self._call("GET", f"/v1/apis/{name}/logs", params=params))

    def logs(
        self, name: str, *, follow: bool = False, tail: int = 100, poll_s: float = 0.5
    ) -> Iterator[dict[str, str]]:
        """Yield {"replica", "line"} dicts: the last ``tail`` lines, then (with ``follow``) new ones as they come."""
        cursor: dict[str, int] | None = None
        while True:
            out = self.read_logs(name, cursor=cursor, tail=tail)
            yield from out["lines"]
            cursor = out["cursor"]
            if not follow:
                return
            time.sleep(poll_s)

    # predictions -----------------------------------------------------------------------------------
    def _prediction(
        self,
        name: str,
        payload: Any,
        model: str | None,
        version: int | None,
        api_key: str | None,
        raw: bytes | None,
        content_type: str,
        accept: str | None = None,
    ) -> tuple[str, dict[str, str], bytes]:
        path = f"/{name}" + (f"/{model}" if model else "") + (f"/{version}" if version is not None else "")
        headers = {"Content-Type": content_type}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if accept:
            headers["Accept"] = accept
        return path, headers, raw if raw is not None else orjson.dumps(payload)

    def stream(
        self,
        name: str,
        payload: Any,
        *,
        sse: bool = False,
        model: str | None = None,
        version: int | None = None,
        api_key: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Iterator[bytes | str]:
        """Send one prediction to a streaming API (a generator predictor) and yield its output as it comes.

        Yields ``bytes`` as they arrive (a chunk, or several the network delivered together); with ``sse``
        the request asks for Server-Sent Events and each event's data is yielded as one ``str``. Raises
        RequestError for an error answer, a stream cut mid-way (the predictor failed or timed out) or an
        SSE ``event: error``. ``timeout_s`` bounds each wait for data, not the whole stream."""
        path, headers, body = self._prediction(
            name, payload, model, version, api_key, raw, content_type, "text/event-stream" if sse else None
        )
        http = httpx.Client(base_url=self.gateway_url, timeout=self.timeout_s)
        try:
            with http.stream("POST", path, content=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _request_error(name, resp.status_code, resp.content, resp.headers.get("content-type", ""))
                try:
                    if sse:
                        events = SseParser(name)
                        for data in resp.iter_raw():
                            yield from events.feed(data)
                    else:
                        yield from resp.iter_raw()
                except httpx.TransportError as exc:
                    raise _cut(name, exc) from None
        finally:
            http.close()

    async def astream(
        self,
        name: str,
        payload: Any,
        *,
        sse: bool = False,
        model: str | None = None,
        version: int | None = None,
        api_key: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> AsyncIterator[bytes | str]:
        """``stream`` for asyncio code: ``async for chunk in client.astream(...)``. Breaking out of the loop
        (or cancelling the task) closes the connection, and the platform stops the generator."""
        path, headers, body = self._prediction(
            name, payload, model, version, api_key, raw, content_type, "text/event-stream" if sse else None
        )
        async with (
            httpx.AsyncClient(base_url=self.gateway_url, timeout=self.timeout_s) as http,
            http.stream("POST", path, content=body, headers=headers) as resp,
        ):
            if resp.status_code >= 400:
                await resp.aread()
                raise _request_error(name, resp.status_code, resp.content, resp.headers.get("content-type", ""))
            try:
                if sse:
                    events = SseParser(name)
                    async for data in resp.aiter_raw():
                        for event in events.feed(data):
                            yield event
                else:
                    async for data in resp.aiter_raw():
                        yield data
            except httpx.TransportError as exc:
                raise _cut(name, exc) from None

    def predict(
        self,
        name: str,
        payload: Any,
        *,
        model: str | None = None,
        version: int | None = None,
        api_key: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one prediction through the gateway; returns parsed JSON (or text/bytes)."""
        if self._gateway is None:
            self._gateway = httpx.Client(base_url=self.gateway_url, timeout=self.timeout_s)
        path, headers, body = self._prediction(name, payload, model, version, api_key, raw, content_type)
        resp = self._gateway.post(path, content=body, headers=headers)
        ctype = resp.headers.get("content-type", "")
        if resp.status_code >= 400:
            raise _request_error(name, resp.status_code, resp.content, ctype)
        return _parsed(resp.content, ctype)


def _parsed(content: bytes, ctype: str) -> Any:
    if "json" in ctype and "ndjson" not in ctype and content:
        return orjson.loads(content)
    return content.decode("utf-8", "replace") if ctype.startswith("text/") else content


def _request_error(name: str, status: int, content: bytes, ctype: str) -> RequestError:
    parsed = _parsed(content, ctype)
    message = parsed.get("message", str(parsed)) if isinstance(parsed, dict) else str(parsed)
    return RequestError(f"{name}: HTTP {status}: {message}", details={"status": status, "body": parsed})


def _cut(name: str, exc: Exception) -> RequestError:
    return RequestError(
        f"{name}: the stream was cut before its end (the predictor failed or timed out; see its logs): {exc}",
        details={"status": 200},
    )


class SseParser:
    """Server-Sent Events from bytes as they arrive: each complete event's data (its ``data:`` lines joined
    with newlines); an ``event: error`` raises RequestError with the error document the replica sent."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        out: list[str] = []
        for block in blocks:
            event, lines = "message", []
            for line in block.split(b"\n"):
                field, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if field == b"data":
                    lines.append(value.decode("utf-8", "replace"))
                elif field == b"event":
                    event = value.decode("utf-8", "replace")
            text = "\n".join(lines)
            if event == "error":
                try:
                    doc = orjson.loads(text)
                except orjson.JSONDecodeError:
                    doc = {"message": text}
                raise RequestError(f"{self._name}: the stream failed: {doc.get('message', text)}", details=doc)
            out.append(text)
        return out
