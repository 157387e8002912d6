"""Load and validate thrifty.yaml and cluster files. Errors name the file, the YAML path, the line, the value and
what is allowed.

Every entry point reads through :mod:`thrifty.config.bounded_yaml`, so a config's size, node count and depth
(aliases expanded) are checked before any Python object is built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from thrifty.config.bounded_yaml import format_path, load_bounded
from thrifty.config.cluster import ClusterConfig
from thrifty.config.limits import ENV_VARS, Limits
from thrifty.config.schema import ProjectConfig
from thrifty.errors import ConfigError

__all__ = [
    "CONFIG_NAMES",
    "find_config",
    "format_path",
    "load_cluster",
    "load_config",
    "parse_cluster_text",
    "parse_file",
    "parse_text",
    "read_data",
    "read_text",
    "validate_data",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)

CONFIG_NAMES = ("thrifty.yaml", "thrifty.yml")


def find_config(path: str | Path) -> Path:
    """A project folder or a config file -> the config file."""
    p = Path(path)
    if p.is_dir():
        for name in CONFIG_NAMES:
            if (p / name).is_file():
                return p / name
        raise ConfigError(f"{p}: no thrifty.yaml in this folder", details={"file": str(p)})
    if not p.is_file():
        raise ConfigError(f"{p}: no such file", details={"file": str(p)})
    return p


def _line_map(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # pydantic adds the union branch / tagged type names into loc for some errors; keep only YAML keys.
    return tuple(p for p in loc if isinstance(p, int) or not p.startswith(("function-", "int", "str", "float")))


def _value_at(data: Any, loc: tuple[str | int, ...]) -> tuple[bool, Any]:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, cur


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown field (not part of the schema; see `thrifty schema`)"
    if err["type"] == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def validate_data(
    data: Any,
    source: str,
    lines: dict[tuple[str | int, ...], int] | None = None,
    limits: Limits | None = None,
) -> ProjectConfig:
    """Validate parsed YAML (or JSON) data. ``source`` names the file in error messages."""
    return validate_model(ProjectConfig, data, source, lines, limits, "a mapping with an 'apis' list", "config")


def validate_model(
    model: type[M],
    data: Any,
    source: str,
    lines: dict[tuple[str | int, ...], int] | None,
    limits: Limits | None,
    top_level: str,
    what: str,
) -> M:
    """Validate parsed data against any config model (project, cluster file, simulator scenario) with located
    errors; ``top_level`` says what the file's top level must be, ``what`` names the file's kind in messages."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be {top_level}, got {type(data).__name__}",
            details={"file": source, "problems": []},
        )
    try:
        return model.model_validate(data, context={"limits": limits or Limits.from_env()})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            found, value = _value_at(data, loc)
            problem: dict[str, Any] = {"path": format_path(loc), "message": _message(err)}
            if found and not isinstance(value, dict | list):
                problem["value"] = value
            line = (lines or {}).get(loc)
            if line is not None:
                problem["line"] = line
            problems.append(problem)
        text = "\n".join(
            f"  {source}{':' + str(p['line']) if 'line' in p else ''}: {p['path']}"
            f"{' = ' + repr(p['value']) if 'value' in p else ''}: {p['message']}"
            for p in problems
        )
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(
            f"{source}: {len(problems)} {noun} in the {what}:\n{text}",
            details={"file": source, "problems": problems},
        ) from None


def read_data(text: str, source: str, limits: Limits | None = None) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """(data, line of each YAML path) of a config's text, read through the bounded YAML loader."""
    data, node = load_bounded(text, source, limits or Limits.from_env())
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines


def parse_text(text: str, source: str, limits: Limits | None = None) -> ProjectConfig:
    """Validate a config's text; ``limits`` default to the THRIFTY_MAX_* environment."""
    limits = limits or Limits.from_env()
    data, lines = read_data(text, source, limits)
    return validate_data(data, source, lines, limits)


def parse_cluster_text(text: str, source: str, limits: Limits | None = None) -> ClusterConfig:
    """Validate a cluster file's text, with the same bounds and located errors as a project's."""
    limits = limits or Limits.from_env()
    data, lines = read_data(text, source, limits)
    return validate_model(ClusterConfig, data, source, lines, limits, "a mapping (engine, provider, node_pools, ...)",
                     "cluster file")  # fmt: skip


def load_cluster(path: str | Path, limits: Limits | None = None) -> ClusterConfig:
    """Read and validate a cluster file; its size is checked before it is read."""
    limits = limits or Limits.from_env()
    file = Path(path)
    return parse_cluster_text(read_text(file, str(file), limits), str(file), limits)


def parse_file(file: Path, source: str | None = None, limits: Limits | None = None) -> ProjectConfig:
    """Read and validate a config file; its size is checked before it is read."""
    limits = limits or Limits.from_env()
    source = source or str(file)
    return parse_text(read_text(file, source, limits), source, limits)


def read_text(file: Path, source: str, limits: Limits) -> str:
    """A config file's text, refused before reading when it is over the size limit."""
    try:
        size = file.stat().st_size
        if size > limits.config_bytes:
            raise ConfigError(
                f"{source}: the file has {size} bytes; the limit is {limits.config_bytes} "
                f"({limits.setting('config_bytes')}). A predictor with more data should read it from a file "
                "in the project or a model source.",
                details={"file": source, "value": size, "limit": limits.config_bytes,
                         "setting": ENV_VARS["config_bytes"]},
            )  # fmt: skip
        with open(file, encoding="utf-8") as fh:
            text = fh.read(limits.config_bytes + 1)  # the file may grow between stat and read
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}", details={"file": source}) from None
    return text


def load_config(path: str | Path, limits: Limits | None = None) -> tuple[Path, ProjectConfig]:
    """Find, read and validate a project's config. Returns (config file, config)."""
    file = find_config(path)
    return file, parse_file(file, str(file), limits)
