"""YAML with line numbers, so a bad rule file is refused naming its file, line and reason."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shouwang.config import ConfigError

Loc = tuple[str | int, ...]


class LinedYaml:
    """A parsed YAML document plus the line (1-based) where each key or item starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        self.lines: dict[Loc, int] = {}
        self.data: Any = {} if node is None else self._build(node, ())

    def _build(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = yaml.SafeLoader(b"").construct_object(key_node)
                out[key] = self._build(value_node, (*loc, str(key)))
                self.lines[(*loc, str(key))] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return yaml.SafeLoader(b"").construct_object(node)

    def line(self, loc: Sequence[str | int]) -> int:
        """The line of `loc`, or of its nearest ancestor the file has."""
        key = tuple(loc)
        while key and key not in self.lines:
            key = key[:-1]
        return self.lines.get(key, 1)

    def error(self, loc: Sequence[str | int], reason: str) -> ConfigError:
        where = ".".join(str(p) for p in loc) or "(top level)"
        return ConfigError(f"{self.path}:{self.line(loc)}: {where}: {reason}")

    def validation_error(self, base: Loc, err: ValidationError) -> ConfigError:
        """The first problem pydantic found, placed on its line."""
        first = err.errors()[0]
        loc = (*base, *first["loc"])
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = len(err.errors()) - 1
        if more:
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        return self.error(loc, reason)
