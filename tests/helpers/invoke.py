"""Calling the handlers in-process as API Gateway calls them: the route key and the path parameters come
from the template's routes (devstack.routes), so a test names only the method and the path it would send."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlencode

from devstack.events import make_http_event, pixel_path
from devstack.routes import Route, find_route, http_routes
from devstack.template import Stack

FORM = "application/x-www-form-urlencoded"


@cache
def stack() -> Stack:
    return Stack()


@cache
def routes() -> list[Route]:
    return http_routes(stack())


def api_event(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | str | None = None,
    query: str = "",
    **extra: Any,
) -> dict:
    """The event API Gateway sends for this request, with the route that template.yaml gives the path."""
    found = find_route(routes(), method.upper(), path)
    assert found is not None, f"no route in template.yaml for {method} {path}"
    route, parameters = found
    return make_http_event(
        method.upper(),
        path,
        route_key=route.route_key,
        path_parameters=parameters or None,
        headers=headers,
        body=body,
        query=query,
        **extra,
    )


def function_for(event: dict) -> str:
    """The code directory (functions/<name>) template.yaml routes this event's route key to."""
    method, _, path = event["routeKey"].partition(" ")
    route = next(r for r in routes() if r.method == method and r.path == path)
    return str(stack().functions()[route.function]["Properties"]["CodeUri"]).rstrip("/")


def form_post(path: str, fields: Iterable[tuple[str, str]], *, auth: str) -> dict:
    """A POST of urlencoded form fields (repeated keys kept), as the Mailgun SDKs send /messages."""
    return api_event(
        "POST", path, body=urlencode(list(fields)), headers={"authorization": auth, "content-type": FORM}
    )


def send_message(
    handler: Any, context: Any, fields: Iterable[tuple[str, str]], *, auth: str, domain: str = "example.com"
) -> dict:
    """POST /v3/<domain>/messages through the submit handler; Mailgun's response body (asserted 200)."""
    response = handler.lambda_handler(form_post(f"/v3/{domain}/messages", fields, auth=auth), context)
    assert response["statusCode"] == 200, response["body"]
    return json.loads(response["body"])


def pixel_event(token: str | None, method: str = "GET", **extra: Any) -> dict:
    """A reader's mail client loading the pixel on email.example.com (no token: the bare `/o/`)."""
    path = pixel_path(token) if token is not None else "/o/"
    params = {"token": token} if token is not None else None
    return make_http_event(
        method,
        path,
        route_key=f"{method} /o/{{token}}",
        path_parameters=params,
        headers={"host": "email.example.com", "user-agent": "Mozilla/5.0 (X11) Test"},
        **extra,
    )
