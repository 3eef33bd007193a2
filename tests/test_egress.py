"""Webhooks never reach the farm's own network: no server-side request forgery."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cameofarm.cluster.egress import AllowRule, DestinationRefused, check_url, resolve

INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://10.0.0.1/",  # private
    "http://192.168.1.1:8080/x",
    "http://172.16.5.4/",
    "http://[::1]:8000/v1/users",  # the farm's own API
    "http://localhost:8265/api/jobs/",  # the Ray dashboard's job API
    "http://127.0.0.1:6379/",  # Ray GCS
    "http://[::ffff:127.0.0.1]:8000/",  # loopback in IPv4-mapped IPv6
    "http://0.0.0.0:8000/",
    "http://100.64.0.1/",  # carrier-grade NAT (shared)
    "http://[fd00::1]/",  # unique local
    "http://[fe80::1]/",  # link-local v6
    "http://224.0.0.1/",  # multicast
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_destinations_are_refused(url):
    with pytest.raises(DestinationRefused, match="internal address"):
        resolve(url)


def test_public_addresses_pass_and_malformed_urls_do_not():
    dest = resolve("https://93.184.216.34:8443/hook?x=1")
    assert (dest.scheme, dest.port, dest.target) == ("https", 8443, "/hook?x=1")
    for bad, why in [
        ("ftp://93.184.216.34/", "only http"),
        ("http://user:pw@93.184.216.34/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
    ]:
        with pytest.raises(DestinationRefused, match=why):
            check_url(bad)


def test_the_allow_list_admits_exactly_what_it_names():
    rules = [AllowRule.parse("127.0.0.1:9000"), AllowRule.parse("10.0.0.0/8")]
    assert resolve("http://127.0.0.1:9000/h", rules).port == 9000
    assert resolve("http://10.20.30.40/h", rules).port == 80
    with pytest.raises(DestinationRefused):
        resolve("http://127.0.0.1:9001/h", rules)  # another port of loopback stays closed
    assert AllowRule.parse("[::1]:8080").port == 8080
    with pytest.raises(ValueError, match="not an address"):
        AllowRule.parse("example.com")


class _Listener:
    """A loopback HTTP server that counts requests; optionally answers with a redirect."""

    def __init__(self, redirect_to: str | None = None):
        self.requests: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                listener.requests.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _queue_delivery(storage, url):
    from cameofarm.storage.db import OrganisationRow, UserRow, WebhookDeliveryRow

    now = time.time()
    with storage.db.session() as s:
        if s.get(UserRow, "hooker") is None:
            s.add(OrganisationRow(id="org", created_at=now))
            s.flush()
            s.add(UserRow(id="hooker", org_id="org", created_at=now, webhook_secret="k"))
            s.flush()
        row = WebhookDeliveryRow(
            user_id="hooker",
            job_id="job_x",
            url=url,
            body='{"status": "SUCCEEDED"}',
            status="PENDING",
            attempts=0,
            next_at=now,
            created_at=now,
        )
        s.add(row)
        s.flush()
        return row.id


def _delivery(storage, delivery_id):
    from cameofarm.storage.db import WebhookDeliveryRow

    with storage.db.session() as s:
        row = s.get(WebhookDeliveryRow, delivery_id)
        return row.status, row.attempts, row.last_error


def test_a_loopback_webhook_is_refused_and_sends_nothing(storage, farm_config):
    from cameofarm.cluster.webhooks import deliver_due

    listener = _Listener()
    try:
        delivery = _queue_delivery(storage, listener.url)
        assert deliver_due(storage.db, farm_config.webhooks) == 1
        status, attempts, error = _delivery(storage, delivery)
        # Refused for good (a retry would be refused again), and the listener saw nothing.
        assert (status, attempts) == ("FAILED", 1)
        assert "internal address" in error
        assert listener.requests == []

        # The operator's allow-list opens exactly that address and port.
        allowed = farm_config.webhooks.model_copy(
            update={"allow_destinations": [f"127.0.0.1:{listener.port}"]}
        )
        second = _queue_delivery(storage, listener.url)
        deliver_due(storage.db, allowed)
        assert _delivery(storage, second)[0] == "DELIVERED"
        assert listener.requests == ["/hook"]
    finally:
        listener.close()


def test_a_redirect_to_an_internal_host_is_not_followed(storage, farm_config):
    from cameofarm.cluster.webhooks import deliver_due

    inner = _Listener()
    outer = _Listener(redirect_to=inner.url)
    try:
        config = farm_config.webhooks.model_copy(
            update={"allow_destinations": [f"127.0.0.1:{outer.port}"], "max_attempts": 1}
        )
        delivery = _queue_delivery(storage, outer.url)
        deliver_due(storage.db, config)
        status, _attempts, error = _delivery(storage, delivery)
        assert status == "FAILED" and "HTTP 302" in error and "not followed" in error
        assert outer.requests == ["/hook"] and inner.requests == []
    finally:
        inner.close()
        outer.close()


@pytest.mark.parametrize("url", INTERNAL[:7])
def test_setting_an_internal_webhook_is_refused_at_once(storage, farm_config, url):
    from cameofarm.cameos.accounts import create_user
    from cameofarm.service.farm_api import BadRequest, FarmAPI

    api = FarmAPI(farm_config, storage)
    principal, _key = create_user(storage.db, "test", "wendy", "org")
    with pytest.raises(BadRequest, match="internal address"):
        api.set_webhook(principal, url)
    assert api.whoami(principal)["webhook_url"] is None
