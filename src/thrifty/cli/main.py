"""`thrifty` command line: verbs grouped by what they act on. Errors become exit codes here and only here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from thrifty import __version__
from thrifty.cli import apis, cluster, config_cmds, platform, simulate
from thrifty.errors import ThriftyError

F = TypeVar("F", bound=Callable[..., Any])


class ThriftyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ThriftyError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)


@click.group(cls=ThriftyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="thrifty")
@click.option(
    "--home",
    envvar="THRIFTY_HOME",
    type=click.Path(file_okay=False),
    help="Platform folder (state, logs, token). Default: $THRIFTY_HOME or ~/.thrifty.",
)
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """thrifty: serve ML models as HTTP APIs at the lowest cost that meets their latency."""
    ctx.obj = {"home": home}


for module in (platform, apis, config_cmds, cluster, simulate):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="thrifty")


if __name__ == "__main__":
    main()
