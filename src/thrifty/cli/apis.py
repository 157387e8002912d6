"""Verbs on APIs: deploy, get, predict, logs, events, refresh, delete."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from thrifty.cli.output import (
    age,
    api_detail,
    api_rows,
    cluster_cost_line,
    print_json,
    splitter_detail,
    splitter_rows,
    table,
)
from thrifty.client import Client
from thrifty.errors import ConfigError

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", help="Output format.")


def client_of(ctx: click.Context) -> Client:
    return Client(ctx.obj.get("home"))


def progress_printer(quiet: bool) -> Any:
    last: dict[str, str] = {}

    def show(apis: list[dict[str, Any]]) -> None:
        for a in apis:
            reps = a["replicas"]
            line = f"{a['name']}: {a['status']} ({reps['ready']}/{reps['requested']} replicas ready)"
            if not quiet and last.get(a["name"]) != line:
                click.echo(line, err=True)
                last[a["name"]] = line

    return show


@click.command()
@click.argument("path", default=".", type=click.Path())
@click.option("--wait/--no-wait", default=True, help="Wait until the APIs are live (default) or return at once.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, help="Seconds to wait for live.")
@OUTPUT
@click.pass_context
def deploy(ctx: click.Context, path: str, wait: bool, timeout_s: float, output: str) -> None:
    """Deploy the project folder (or config file) at PATH: its APIs start or roll to the new revision."""
    client = client_of(ctx)
    result = client.deploy(path, wait=wait, timeout_s=timeout_s, on_progress=progress_printer(output == "json"))
    if output == "json":
        print_json(result)
        return
    for a in result["apis"]:
        if "action" in a:
            click.echo(f"{a['name']}: {a['action']}")
        else:
            click.echo(f"{a['name']}: {a['status']} at {client.gateway_url}/{a['name']}")
    for s in result.get("splitters", []):
        click.echo(f"{s['name']} (splitter): {s['action']} at {client.gateway_url}/{s['name']}")


@click.command()
@click.argument("name", required=False)
@click.option("-w", "--watch", is_flag=True, help="Refresh every 2 seconds.")
@OUTPUT
@click.pass_context
def get(ctx: click.Context, name: str | None, watch: bool, output: str) -> None:
    """List the APIs and splitters, or show one API (endpoint, replicas) or splitter (backends, canary)."""
    client = client_of(ctx)
    while True:
        data: Any
        if name:
            data = client.get(name)
            if output == "json":
                print_json(data)
            else:
                click.echo(splitter_detail(data) if data.get("kind") == "splitter" else api_detail(data))
        else:
            overview = client.overview()
            apis, splitters = overview["apis"], overview.get("splitters", [])
            if output == "json":  # the APIs, then each splitter ("kind": "splitter")
                print_json([*apis, *splitters])
            elif not apis and not splitters:
                click.echo("no APIs are deployed (use `thrifty deploy`)")
            else:
                cost = cluster_cost_line(overview["cost"]) if "cost" in overview else ""
                click.echo(
                    "\n\n".join(t for t in (apis and api_rows(apis), splitters and splitter_rows(splitters), cost) if t)
                )
        if not watch:
            return
        time.sleep(2)
        click.clear()


@click.command()
@click.argument("name")
@click.argument("payload_file", required=False, type=click.Path(allow_dash=True))
@click.option("-d", "--data", help="Payload as a JSON string instead of a file.")
@click.option("-m", "--model", help="Model name (multi-model APIs).")
@click.option("-v", "--version", "model_version", type=int, help="Model version (default: latest).")
@click.option("-k", "--api-key", envvar="THRIFTY_API_KEY", help="API key, if the API requires one.")
@click.option("--stream", is_flag=True, help="Print the output as it comes (an API whose predict is a generator).")
@click.pass_context
def predict(
    ctx: click.Context,
    name: str,
    payload_file: str | None,
    data: str | None,
    model: str | None,
    model_version: int | None,
    api_key: str | None,
    stream: bool,
) -> None:
    """Send a prediction to API NAME: the JSON in PAYLOAD_FILE ('-' for stdin) or --data."""
    if data is not None:
        raw = data.encode()
    elif payload_file == "-":
        raw = sys.stdin.buffer.read()
    elif payload_file:
        try:
            raw = Path(payload_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{payload_file}: cannot read: {exc.strerror}") from None
    else:
        raise click.UsageError("give a PAYLOAD_FILE or --data")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{payload_file or '--data'}: not valid JSON: {exc}") from None
    if stream:
        _print_stream(client_of(ctx), name, raw, model, model_version, api_key)
        return
    result = client_of(ctx).predict(name, None, raw=raw, model=model, version=model_version, api_key=api_key)
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
    elif isinstance(result, str):
        click.echo(result)
    else:
        print_json(result)


def _print_stream(
    client: Client, name: str, raw: bytes, model: str | None, version: int | None, api_key: str | None
) -> None:
    """Each chunk to stdout as it arrives (a newline at the end if the output had none)."""
    out = sys.stdout.buffer
    last = b"\n"
    for chunk in client.stream(name, None, raw=raw, model=model, version=version, api_key=api_key):
        data = chunk.encode() if isinstance(chunk, str) else chunk
        if data:
            out.write(data)
            out.flush()
            last = data[-1:]
    if last != b"\n":
        out.write(b"\n")
        out.flush()


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default=100, show_default=True, help="Lines of each replica's log to start with.")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", help="json: one JSON object a line."
)
@click.pass_context
def logs(ctx: click.Context, name: str, follow: bool, tail: int, output: str) -> None:
    """Print the logs of API NAME's replicas."""
    for entry in client_of(ctx).logs(name, follow=follow, tail=tail):
        if output == "json":
            click.echo(orjson.dumps(entry).decode())
        else:
            click.echo(f"[{entry['replica']}] {entry['line']}")


@click.command()
@click.argument("name", required=False)
@click.option("--kind", help="Only events of this kind (deploy, status, replica, replica_exited, scaling, ...).")
@click.option("--limit", default=50, show_default=True)
@OUTPUT
@click.pass_context
def events(ctx: click.Context, name: str | None, kind: str | None, limit: int, output: str) -> None:
    """Recent events of API or splitter NAME (deploys, status changes, replica exits, scaling, canary steps);
    without NAME, every event, the platform's too (gateway restarts, node launches, releases, consolidations)."""
    evs = client_of(ctx).events(name, kind=kind, limit=limit)
    if output == "json":
        print_json(evs)
        return
    if name is None:
        rows = [[age(e["ts"]), e["api"], e["kind"], e["message"]] for e in evs]
        click.echo(table(["AGE", "API", "KIND", "MESSAGE"], rows))
        return
    click.echo(table(["AGE", "KIND", "MESSAGE"], [[age(e["ts"]), e["kind"], e["message"]] for e in evs]))


@click.command()
@click.argument("name")
@OUTPUT
@click.pass_context
def refresh(ctx: click.Context, name: str, output: str) -> None:
    """Rolling restart of API NAME's replicas."""
    result = client_of(ctx).refresh(name)
    if output == "json":
        print_json(result)
    else:
        click.echo(f"{name}: rolling restart to revision {result['revision']}")


@click.command()
@click.argument("name")
@OUTPUT
@click.pass_context
def delete(ctx: click.Context, name: str, output: str) -> None:
    """Delete API or splitter NAME; an API's replicas finish their in-flight requests and stop."""
    result = client_of(ctx).delete(name)
    if output == "json":
        print_json(result)
    else:
        click.echo(f"{name}: deleted")


COMMANDS = [deploy, get, predict, logs, events, refresh, delete]
