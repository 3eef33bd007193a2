"""The API's request metrics: an ASGI middleware outside every other layer, so that what the
ingress guard refuses (429, 413, 408) is counted as well as what the routes answer.

Requests are labelled by route template (`/v1/jobs/{job_id}`), never by raw path: a client
that requests random paths adds one series, `unmatched`, not one per path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cameofarm.monitoring.metrics import API_RATE_LIMITED, API_REQUESTS, API_SECONDS
from cameofarm.service.ingress import App, Message, Receive, Scope, Send
from starlette.routing import BaseRoute, Match

UNMATCHED = "unmatched"


def count_refusal(limit: str) -> None:
    """Count a request refused by a rate limit.

    Routes call this instead of touching the counter: the app's closures are pickled by value
    to the Ray Serve replica, and a counter they referenced directly would be a copy there,
    not the one the replica's /metrics serves (measured: refusals went uncounted)."""
    API_RATE_LIMITED.labels(limit=limit).inc()


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route this request goes to, or `unmatched`."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial is None:  # path matches, method does not (405)
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


class RequestMetrics:
    """Counts every HTTP request by route, method and status, and times it."""

    def __init__(self, app: App, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route, method = route_template(self.routes, scope), str(scope.get("method", ""))
        status = 500  # an exception that escapes every handler is answered 500 by the server

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            labels: dict[str, Any] = {"route": route, "method": method}
            API_REQUESTS.labels(**labels, status=str(status)).inc()
            API_SECONDS.labels(**labels).observe(time.perf_counter() - started)
