"""Named parameters (`:name`) for asyncpg, which only speaks `$1, $2, ...`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# `:name` but not the second colon of a `::type` cast.
_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class NamedSQL:
    """A statement with `:name` placeholders, compiled once to asyncpg's numbered form."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, template: str) -> NamedSQL:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_PARAM.sub(number, template), tuple(names))

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]
