"""The admin API's routing, auth and parameter checks, without sockets."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from thrifty.control.admin import AdminApi
from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.engines.fake import FakeEngine

TOKEN = "t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(tmp_path: Path) -> AdminApi:
    home = Home(tmp_path / "home")
    home.ensure()
    (home.logs_dir / "a").mkdir()
    (home.logs_dir / "a" / "a-1.log").write_text("one\ntwo\n")
    (home.root / "secret.log").write_text("not for you\n")
    op = Operator(home, Store(home.db_path), FakeEngine(lambda: 0.0), FakeGateway(), clock=lambda: 0.0)
    return AdminApi(op, TOKEN, on_shutdown=lambda: None)


async def call(admin: AdminApi, method: str, path: str, query: str = "", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    out = await admin.handle(method, path, query, AUTH if headers is None else headers, b"")
    return out.status, orjson.loads(out.body)


async def test_token_required(admin: AdminApi) -> None:
    assert (await call(admin, "GET", "/v1/apis", headers={}))[0] == 401
    assert (await call(admin, "GET", "/v1/apis", headers={"authorization": "Bearer nope"}))[0] == 401
    assert (await call(admin, "GET", "/v1/apis"))[0] == 200
    assert admin.authorized(f"Bearer {TOKEN}") and not admin.authorized("")


async def test_unknown_endpoint_method_and_api(admin: AdminApi) -> None:
    assert (await call(admin, "GET", "/v1/nothing"))[0] == 404
    status, body = await call(admin, "PUT", "/v1/apis")
    assert status == 405 and "GET" in body["message"]
    status, body = await call(admin, "GET", "/v1/apis/iris")
    assert status == 404 and body["error"] == "not_found"


async def test_logs_and_events_parameters(admin: AdminApi) -> None:
    status, body = await call(admin, "GET", "/v1/apis/a/logs", "tail=1")
    assert status == 200 and [e["line"] for e in body["lines"]] == ["two"]
    for query in ("tail=abc", "cursor=notjson", 'cursor={"a-1.log":-1}', "cursor=[1]"):
        status, body = await call(admin, "GET", "/v1/apis/a/logs", query)
        assert status == 400, query
    assert (await call(admin, "GET", "/v1/apis/a/events", "limit=x"))[0] == 400


@pytest.mark.parametrize("name", ["..", ".", "A", "a_b", "x" * 41])
async def test_api_names_are_checked_before_touching_paths(admin: AdminApi, name: str) -> None:
    status, body = await call(admin, "GET", f"/v1/apis/{name}/logs")
    assert status == 400 and "not an API name" in body["message"]
