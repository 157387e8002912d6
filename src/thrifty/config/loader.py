"""Load and validate thrifty.yaml. Errors name the file, the YAML path, the line, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from thrifty.config.schema import ProjectConfig
from thrifty.errors import ConfigError

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


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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


def validate_data(data: Any, source: str, lines: dict[tuple[str | int, ...], int] | None = None) -> ProjectConfig:
    """Validate parsed YAML (or JSON) data. ``source`` names the file in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping with an 'apis' list, got {type(data).__name__}",
            details={"file": source, "problems": []},
        )
    try:
        return ProjectConfig.model_validate(data)
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
            f"{source}: {len(problems)} {noun} in the config:\n{text}",
            details={"file": source, "problems": problems},
        ) from None


def parse_text(text: str, source: str) -> ProjectConfig:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{source}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}",
            details={"file": source},
        ) from None
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return validate_data(data, source, lines)


def load_config(path: str | Path) -> tuple[Path, ProjectConfig]:
    """Find, read and validate a project's config. Returns (config file, config)."""
    file = find_config(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}", details={"file": str(file)}) from None
    return file, parse_text(text, str(file))
