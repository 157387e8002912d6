"""Read YAML whose cost is bounded before anything is built from it.

A YAML file of a few hundred bytes can stand for billions of nodes: an anchor listing another one ten
times, seven levels deep ("billion laughs"). Anything that walks the result (validation, JSON
serialization, hashing) pays for the expanded size. So the parser's *event stream* is measured first,
without building anything: every node counts, an alias counts as the whole node it names (its size is
remembered once per anchor, so measuring costs no more than reading the text), and reading stops at the
first event past a limit. Only a document within the limits is composed and constructed.

Aliases stay allowed (they are handy to share an autoscaling block between APIs); they just cost what
they expand to. The parser itself keeps explicit stacks (no recursion), so deep nesting is refused at
the limit instead of exhausting the stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from thrifty.config.limits import ENV_VARS, Limits
from thrifty.errors import ConfigError

try:  # libyaml is about ten times faster; the pure-Python parser gives the same events
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

Path = tuple[str | int, ...]


def format_path(loc: Path) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line(event: Any) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


@dataclass
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    is_map: bool
    anchor: str | None
    nodes_at_start: int
    bytes_at_start: int
    children: int = 0
    key: str | int = "?"
    deepest_child: int = 0

    def child_path(self) -> str | int:
        return self.key if self.is_map else self.children


@dataclass
class _Size:
    nodes: int
    bytes: int
    depth: int


class _Meter:
    def __init__(self, source: str, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.nodes = 0
        self.bytes = 0
        self.stack: list[_Open] = []
        self.anchors: dict[str, _Size] = {}

    def path(self) -> Path:
        return tuple(frame.child_path() for frame in self.stack)

    def refuse(self, event: Any, what: str, field: str) -> ConfigError:
        line = _line(event)
        path = format_path(self.path())
        if len(path) > 160:  # a path 64 levels deep says no more than its ends do
            path = path[:100] + "..." + path[-50:]
        limit = getattr(self.limits, field)
        return ConfigError(
            f"{self.source}:{line}: {path}: {what}; the limit is {limit} ({self.limits.setting(field)}). "
            "A predictor with more data should read it from a file in the project or a model source.",
            details={
                "file": self.source,
                "line": line,
                "path": path,
                "limit": limit,
                "setting": ENV_VARS[field],
                "problems": [{"path": path, "line": line, "message": what}],
            },
        )

    def _add(self, event: Any, size: _Size) -> None:
        self.nodes += size.nodes
        self.bytes += size.bytes
        if self.nodes > self.limits.config_nodes:
            raise self.refuse(
                event,
                f"the config has more than {self.limits.config_nodes} YAML nodes "
                "(an alias counts as every node it stands for)",
                "config_nodes",
            )
        if self.bytes > self.limits.config_bytes:
            raise self.refuse(
                event,
                f"the config's values add up to more than {self.limits.config_bytes} bytes "
                "(an alias counts as everything it stands for)",
                "config_bytes",
            )
        if len(self.stack) + size.depth > self.limits.config_depth:
            raise self.refuse(
                event, f"the config nests more than {self.limits.config_depth} levels deep", "config_depth"
            )

    def _child_done(self, size: _Size, key: object = None) -> None:
        if not self.stack:
            return
        parent = self.stack[-1]
        parent.deepest_child = max(parent.deepest_child, size.depth)
        if parent.is_map and parent.children % 2 == 0:  # a key; the value that follows sits under it
            parent.key = key if isinstance(key, str) else "?"
        parent.children += 1

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.ScalarEvent):
            size = _Size(1, len(event.value), 1)
            self._add(event, size)
            if event.anchor:
                self.anchors[event.anchor] = size
            self._child_done(size, event.value)
        elif isinstance(event, yaml.AliasEvent):
            if any(frame.anchor == event.anchor for frame in self.stack):
                raise self.refuse(
                    event, f"the alias *{event.anchor} refers to a node that contains it (endless)", "config_nodes"
                )
            known = self.anchors.get(event.anchor or "")
            if known is None:
                raise ConfigError(
                    f"{self.source}:{_line(event)}: not valid YAML: found undefined alias *{event.anchor}",
                    details={"file": self.source, "line": _line(event)},
                )
            self._add(event, known)
            self._child_done(known)
        elif isinstance(event, yaml.CollectionStartEvent):
            self._add(event, _Size(1, 0, 1))
            is_map = isinstance(event, yaml.MappingStartEvent)
            self.stack.append(_Open(is_map, event.anchor, self.nodes - 1, self.bytes))
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            size = _Size(self.nodes - frame.nodes_at_start, self.bytes - frame.bytes_at_start, frame.deepest_child + 1)
            if frame.anchor:
                self.anchors[frame.anchor] = size
            self._child_done(size)


def _yaml_error(exc: yaml.YAMLError, source: str, limits: Limits, at: Path = ()) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    where = f":{line}" if line is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    if "nesting depth" in problem:  # libyaml's own guard (1000 levels), hit while it scans ahead of our meter
        path = format_path(at)
        what = f"the config nests more than {limits.config_depth} levels deep"
        return ConfigError(
            f"{source}{where}: {path}: {what}; the limit is {limits.config_depth} ({limits.setting('config_depth')})",
            details={"file": source, "line": line, "path": path, "limit": limits.config_depth,
                     "setting": ENV_VARS["config_depth"], "problems": [{"path": path, "line": line, "message": what}]},
        )  # fmt: skip
    return ConfigError(f"{source}{where}: not valid YAML: {problem}", details={"file": source, "line": line})


def measure(text: str, source: str, limits: Limits) -> None:
    """Raise ConfigError at the first event that takes the document past a limit."""
    if len(text) > limits.config_bytes:
        raise ConfigError(
            f"{source}: the file has {len(text)} characters; the limit is {limits.config_bytes} "
            f"({limits.setting('config_bytes')})",
            details={"file": source, "value": len(text), "limit": limits.config_bytes,
                     "setting": ENV_VARS["config_bytes"]},
        )  # fmt: skip
    meter = _Meter(source, limits)
    loader = _Loader(text)
    try:
        while loader.check_event():
            meter.feed(loader.get_event())
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, limits, meter.path()) from None
    finally:
        loader.dispose()


def load_bounded(text: str, source: str, limits: Limits) -> tuple[Any, yaml.Node | None]:
    """(data, node graph) of one YAML document, after :func:`measure` has accepted it."""
    measure(text, source, limits)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, limits) from None
    finally:
        loader.dispose()
    return data, node
