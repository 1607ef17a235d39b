"""Named routes: map a request's method and raw path to the route entry that configures it.

Templates are compiled once. ``{var}`` matches one non-empty path segment, and the path is matched
raw (not percent-decoded), so ``%2F`` stays inside its segment and cannot shift the match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..config import RouteConfig

__all__ = ["RouteTable", "compile_template"]

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SEGMENT = "[^/]+"


def compile_template(template: str) -> re.Pattern[str]:
    """Turn ``/v1/trainings/{id}`` into a full-match regex; stray braces are a config error."""
    if not template.startswith("/"):
        raise ValueError(f"route path must start with '/': {template!r}")
    parts: list[str] = []
    position = 0
    for variable in _VARIABLE.finditer(template):
        parts.append(_literal(template, template[position : variable.start()]))
        parts.append(_SEGMENT)
        position = variable.end()
    parts.append(_literal(template, template[position:]))
    return re.compile("".join(parts))


def _literal(template: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"route path has a malformed {{variable}}: {template!r}")
    return re.escape(text)


class RouteTable:
    """An ordered list of routes; the first whose method and template match wins."""

    __slots__ = ("_entries",)

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._entries = tuple(
            (None if r.method is None else r.method.upper(), compile_template(r.path).fullmatch, r)
            for r in routes
        )

    def match(self, method: str, path: str) -> RouteConfig | None:
        """``path``: the raw part after ``/<provider>``, no query, starting with ``/``."""
        method = method.upper()
        for route_method, fullmatch, route in self._entries:
            if (route_method is None or route_method == method) and fullmatch(path) is not None:
                return route
        return None
