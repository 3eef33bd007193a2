"""The API's guard against slow and greedy clients, driven through the real app over ASGI.

Slow bodies are bodies that never come (a receive that waits on an event nobody sets), so
each refusal is decided by the guard's own clock, not by how fast this machine runs."""

from __future__ import annotations

import asyncio
import json

import pytest


@pytest.fixture
def app_config(farm_config):
    api = farm_config.api.model_copy(
        update={
            "body_idle_seconds": 0.2,
            "body_grace_seconds": 0.5,
            "max_requests_per_client": 2,
            "max_body_bytes": 1024,
        }
    )
    return farm_config.model_copy(update={"api": api})


@pytest.fixture
def app(app_config, storage):
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app

    return build_app(app_config, api_factory=lambda: FarmAPI(app_config, storage))


def _scope(path="/v1/jobs", method="POST", client="10.0.0.7", headers=()):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": (client, 40000),
        "server": ("127.0.0.1", 8000),
    }


class Conversation:
    """One request: the body chunks the client sends, then (optionally) a stall forever."""

    def __init__(self, chunks=(), stall=False):
        self.chunks = list(chunks)
        self.stall = stall
        self.reads = 0
        self.sent = []
        self.forever = asyncio.Event()

    async def receive(self):
        self.reads += 1
        if self.chunks:
            body = self.chunks.pop(0)
            return {
                "type": "http.request",
                "body": body,
                "more_body": bool(self.chunks) or self.stall,
            }
        if self.stall:
            await self.forever.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)

    @property
    def status(self):
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def error(self):
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return json.loads(body)["error"]


def test_a_body_that_stalls_is_answered_408(app):
    talk = Conversation([b'{"cameo_ids": '], stall=True)
    asyncio.run(app(_scope(), talk.receive, talk.send))
    assert talk.status == 408
    assert "stalled after 14 bytes" in talk.error


def test_a_body_past_its_limit_is_refused_without_reading_the_rest(app):
    talk = Conversation([b"x" * 600, b"x" * 600, b"x" * 600, b"x" * 600])  # no Content-Length
    asyncio.run(app(_scope(), talk.receive, talk.send))
    assert talk.status == 413 and "1024 byte limit" in talk.error
    assert talk.reads == 2  # stopped at the chunk that crossed the limit


def test_a_declared_length_past_the_limit_is_refused_before_reading(app):
    talk = Conversation([b"{}"])
    asyncio.run(app(_scope(headers=[(b"content-length", b"5000")]), talk.receive, talk.send))
    assert talk.status == 413 and talk.reads == 0
    bogus = Conversation([b"{}"])
    asyncio.run(app(_scope(headers=[(b"content-length", b"12x")]), bogus.receive, bogus.send))
    assert bogus.status == 400


def test_one_client_may_hold_only_so_many_requests_and_others_are_not_held_up(app):
    async def scenario():
        slow = [Conversation([b"{"], stall=True) for _ in range(2)]
        held = [asyncio.create_task(app(_scope(), t.receive, t.send)) for t in slow]
        while not all(t.reads for t in slow):  # both are in progress, waiting for their bodies
            await asyncio.sleep(0)
        third = Conversation([b"{}"])
        await app(_scope(), third.receive, third.send)
        other = Conversation()
        await app(_scope("/healthz", "GET", client="10.0.0.8"), other.receive, other.send)
        await asyncio.gather(*held)
        return slow, third, other

    slow, third, other = asyncio.run(scenario())
    assert third.status == 429 and "already has 2 requests" in third.error
    assert other.status == 200  # another client is answered while those two stall
    assert [t.status for t in slow] == [408, 408]
    # Once they ended, the same client is served again.
    again = Conversation()
    asyncio.run(app(_scope("/healthz", "GET"), again.receive, again.send))
    assert again.status == 200


def test_a_whole_body_in_time_passes(app):
    talk = Conversation([b'{"cameo_ids": ["c"], ', b'"script": "Hi.", "tier": "plus"}'])
    asyncio.run(app(_scope(), talk.receive, talk.send))
    assert talk.status == 401  # the body was read whole; the missing key is what stops it
