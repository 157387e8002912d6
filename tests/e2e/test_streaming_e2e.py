"""examples/textgen on the real local platform: tokens stream through the gateway to curl-like clients, the CLI
(``thrifty predict --stream``) and the Python client, chunked and as Server-Sent Events."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from thrifty.client import Client

pytestmark = pytest.mark.e2e

TEXTGEN = Path(__file__).resolve().parents[2] / "examples" / "textgen"


def expected_chunks(payload: dict[str, Any]) -> list[str]:
    """What the example's generator yields for ``payload`` (it is seeded), computed without the platform."""
    spec = importlib.util.spec_from_file_location("textgen_e2e", TEXTGEN / "predictor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    chunks: list[str] = module.TextGenerator({}).plan(payload)
    return chunks


def test_textgen_streams_through_the_platform(platform: Any, project: Any) -> None:
    platform.cli("deploy", str(project("textgen")))
    url = f"{platform.gateway}/textgen"
    payload = orjson.loads((TEXTGEN / "sample.json").read_bytes())
    chunks = expected_chunks(payload)
    text = "".join(chunks)

    with httpx.Client(timeout=30) as http:
        with http.stream("POST", url, json=payload) as resp:
            assert resp.status_code == 200 and resp.headers["transfer-encoding"] == "chunked"
            arrivals = list(resp.iter_raw())
        # One token every 20 ms: the client gets them in many reads, not one body at the end.
        assert b"".join(arrivals).decode() == text and len(arrivals) > 1
        resp = http.post(url, json=payload, headers={"accept": "text/event-stream"})
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.text == "".join(f"data: {c}\n\n" for c in chunks)

    out = platform.cli("predict", "textgen", str(TEXTGEN / "sample.json"), "--stream")
    assert out.stdout == text + "\n"

    client = Client(platform.home)
    try:
        assert b"".join(c if isinstance(c, bytes) else c.encode() for c in client.stream("textgen", payload)) == (
            text.encode()
        )
        assert list(client.stream("textgen", payload, sse=True)) == chunks

        async def collect() -> list[str | bytes]:
            return [c async for c in client.astream("textgen", payload, sse=True)]

        assert asyncio.run(collect()) == chunks
    finally:
        client.close()
    stats = platform.json("get", "textgen")
    assert stats["requests"]["2xx"] >= 6, stats  # type: ignore[index]
    platform.cli("delete", "textgen")
