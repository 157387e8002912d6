"""`thrifty validate` and `thrifty schema`: work on files, no platform needed."""

from __future__ import annotations

import click

from thrifty.cli.output import print_json
from thrifty.config.loader import load_config
from thrifty.config.schema import ProjectConfig


@click.command()
@click.argument("path", default=".", type=click.Path())
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", help="Output format.")
def validate(path: str, output: str) -> None:
    """Check a project's thrifty.yaml without deploying it."""
    file, config = load_config(path)
    if output == "json":
        print_json({"file": str(file), "valid": True, "config": config.model_dump(mode="json", by_alias=True)})
        return
    names = ", ".join(a.name for a in config.apis)
    click.echo(f"{file}: valid ({len(config.apis)} API{'s' if len(config.apis) != 1 else ''}: {names})")


@click.command()
def schema() -> None:
    """Print the JSON Schema of thrifty.yaml."""
    print_json(ProjectConfig.model_json_schema(by_alias=True))


COMMANDS = [validate, schema]
