"""The HTTP API's routes, read from the template's HttpApi events, matched the way API Gateway matches
them: exact paths before parameterised ones, greedy `{proxy+}` parameters last."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from devstack.template import Stack

_PARAM = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in the template, e.g. /v3/{domain}/messages
    function: str  # logical id
    pattern: re.Pattern[str]

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int]:
        # More literal segments first, then fewer parameters; greedy parameters last.
        segments = self.path.strip("/").split("/")
        literal = sum(1 for s in segments if not _PARAM.search(s))
        greedy = 1 if "+}" in self.path else 0
        return (greedy, -literal, -len(segments))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method and self.method != "ANY":
            return None
        found = self.pattern.fullmatch(path)
        if not found:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


def compile_path(path: str) -> re.Pattern[str]:
    pattern, position = "", 0
    for param in _PARAM.finditer(path):
        pattern += re.escape(path[position : param.start()])
        name, greedy = param.group(1), param.group(2)
        pattern += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
        position = param.end()
    pattern += re.escape(path[position:])
    return re.compile(pattern)


def http_routes(stack: Stack) -> list[Route]:
    routes = []
    for logical_id, resource in stack.functions().items():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties", {})
            method, path = props["Method"].upper(), props["Path"]
            routes.append(Route(method=method, path=path, function=logical_id, pattern=compile_path(path)))
    return sorted(routes, key=lambda route: route.specificity)


def find_route(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None
