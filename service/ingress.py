"""The API's guard against slow and greedy clients: an ASGI middleware in front of every route.

Behind Ray Serve each request holds one of the ingress replica's slots from its first byte to
its answer. Measured before this guard: 48 connections that sent their bodies a byte at a time
held every slot, and every other call waited (p50 10 s, then timeouts). The guard:
- answers 429 at once when one client address already has `max_requests_per_client` requests
  in progress;
- reads no body past its limit (declared or not): 413 as soon as the limit is crossed;
- answers 408 when a body stalls (no data for `body_idle_seconds`) or arrives slower than
  `min_body_bytes_per_second` once `body_grace_seconds` have passed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cameofarm.configs import FarmConfig
from cameofarm.monitoring.metrics import API_RATE_LIMITED
from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_TYPES = ("application/octet-stream", "video/", "image/", "audio/")


class BodyRefused(HTTPException):
    """A request body that is too large (413) or too slow (408). An HTTPException, so that
    FastAPI passes it through its body parsing unchanged and its handler answers it."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IngressGuard:
    """Per-client request limit, body size limit and body pace limit (see the module doc)."""

    def __init__(self, app: App, config: FarmConfig) -> None:
        self.app = app
        self.api = config.api
        self.active: Counter[str] = Counter()

    def body_limit(self, scope: Scope) -> int:
        """Uploads (recordings, photos, backgrounds) get the upload limit; JSON the body one."""
        kind = _header(scope, b"content-type") or ""
        return (
            self.api.max_upload_bytes if kind.startswith(UPLOAD_TYPES) else self.api.max_body_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        if self.active[address] >= self.api.max_requests_per_client:
            API_RATE_LIMITED.labels(limit="client_requests").inc()
            await _answer(
                send,
                429,
                f"{address} already has {self.api.max_requests_per_client} requests in "
                "progress; wait for one to finish",
                retry_after=1,
            )
            return
        limit = self.body_limit(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(declared) > limit:
                await _answer(send, 413, f"request body is {declared} bytes; the limit is {limit}")
                return
        self.active[address] += 1
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._paced(receive, limit), tracked_send)
        except BodyRefused as exc:  # raised outside a route (no handler saw it)
            if not started:
                await _answer(send, exc.status_code, str(exc.detail))
        finally:
            self.active[address] -= 1
            if self.active[address] <= 0:
                del self.active[address]

    def _paced(self, receive: Receive, limit: int) -> Receive:
        """`receive` that refuses a body past `limit` bytes or slower than the configured
        pace; after the body is complete it passes messages (disconnects) through as is."""
        api = self.api
        began = time.monotonic()
        received = 0
        complete = False

        async def paced() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            # The body may take the grace period plus what the minimum pace allows for it.
            allowed = api.body_grace_seconds + received / api.min_body_bytes_per_second
            left = began + allowed - time.monotonic()
            wait = min(api.body_idle_seconds, max(left, 0.0))
            try:
                message = await asyncio.wait_for(receive(), timeout=wait)
            except TimeoutError:
                raise BodyRefused(
                    408,
                    f"the request body stalled after {received} bytes (no data for "
                    f"{wait:.0f} s, or slower than {api.min_body_bytes_per_second} bytes/s); "
                    "send it again over a working connection",
                ) from None
            if message["type"] != "http.request":
                complete = True  # a disconnect: the app sees it and stops
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyRefused(413, f"request body is over the {limit} byte limit")
            complete = not message.get("more_body", False)
            return message

        return paced
