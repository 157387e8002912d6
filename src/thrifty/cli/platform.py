"""`thrifty up`, `down` and `run`: the local platform's lifecycle."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import click

from thrifty.cli.apis import progress_printer
from thrifty.client import Client
from thrifty.config.loader import load_cluster
from thrifty.control import launcher
from thrifty.control.cluster_setup import check_supported
from thrifty.control.home import Home, default_home
from thrifty.errors import ThriftyError

HOST = click.option("--host", default="127.0.0.1", show_default=True, help="Address the gateway listens on.")
PORT = click.option("--port", default=8888, show_default=True, help="Port the gateway listens on.")


def home_of(ctx: click.Context) -> Home:
    home = ctx.obj.get("home")
    return Home(default_home() if home is None else Path(home))


@click.command()
@HOST
@PORT
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(dir_okay=False),
    help="Cluster file: engine, provider, node pools (see `thrifty schema --cluster`).",
)
@click.pass_context
def up(ctx: click.Context, host: str, port: int, cluster_file: str | None) -> None:
    """Start the platform (operator + gateway) in the background; with --cluster, on that cluster.

    After an operator crash, the gateway and replicas still running are adopted (they keep serving).
    """
    home = home_of(ctx)
    cluster = None
    if cluster_file is not None:
        config = load_cluster(cluster_file)  # a bad file: its errors, and nothing starts
        check_supported(config, cluster_file)
        cluster = Path(cluster_file).resolve()
    launcher.start(home, host=host, port=port, detach=True, cluster=cluster)
    with Client(home.root) as client:
        where = f", cluster from {cluster_file}" if cluster is not None else ""
        click.echo(f"thrifty is up: gateway {client.gateway_url}, state in {home.root}{where}")


@click.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the local platform: replicas finish their in-flight requests, then everything exits.

    Works without a live operator too: what a crashed operator left running is found and stopped.
    """
    home = home_of(ctx)
    if launcher.stop(home):
        click.echo("thrifty is down")
    else:
        click.echo(f"no thrifty platform was running for {home.root}")


@click.command()
@click.argument("path", default=".", type=click.Path())
@HOST
@PORT
@click.pass_context
def run(ctx: click.Context, path: str, host: str, port: int) -> None:
    """Run the platform in the foreground, deploy PATH and stream its logs; Ctrl-C drains and stops."""
    home = home_of(ctx)
    Client.validate(path)  # fail before starting anything
    # Ctrl-C (or SIGTERM, e.g. from a process manager) drains and stops, even where SIGINT was ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    proc = launcher.start(home, host=host, port=port, detach=False)
    try:
        with Client(home.root) as client:
            result = client.deploy(path, wait=True, on_progress=progress_printer(False))
            for a in result["apis"]:
                click.echo(f"{a['name']}: {a['status']} at {client.gateway_url}/{a['name']}")
            click.echo("streaming logs; Ctrl-C to stop", err=True)
            cursors: dict[str, dict[str, int] | None] = {a["name"]: None for a in result["apis"]}
            while proc.poll() is None:
                for name, cursor in cursors.items():
                    out = client.read_logs(name, cursor=cursor, tail=0)
                    cursors[name] = out["cursor"]
                    for entry in out["lines"]:
                        click.echo(f"[{name}/{entry['replica']}] {entry['line']}")
                time.sleep(0.3)
    except KeyboardInterrupt:
        click.echo("\nstopping: draining in-flight requests...", err=True)
    except ThriftyError:
        _stop_child(proc)
        raise
    _stop_child(proc)
    click.echo("stopped", err=True)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=180)  # the operator drains every replica (each up to its request_timeout)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        click.echo("not stopped in time: killing the operator", err=True)
        proc.kill()
        proc.wait()


COMMANDS = [up, down, run]
