"""Job-completion webhooks: HMAC-SHA256 signed POSTs, retried with exponential backoff.

When a job ends, `cluster.jobs` queues a delivery for its customer's webhook URL (in the same
transaction), and one more when it was the last open job of a batch. The scheduler calls
`deliver_due` on its own thread; each delivery is POSTed
with

    X-Cameofarm-Event:     job.succeeded | job.failed | job.cancelled | batch.completed
    X-Cameofarm-Delivery:  the delivery id (the same on every retry: deduplicate on it)
    X-Cameofarm-Signature: t=UNIX_SECONDS,v1=HEX(HMAC_SHA256(secret, "T.BODY"))

A 2xx answer delivers it; anything else (or no answer within `webhooks.timeout_seconds`) is
retried after backoff_seconds, then twice that, and so on, up to `webhooks.max_attempts`.
Redirects are not followed, and a URL that resolves to a loopback, private or link-local
address is refused without a request (`cluster.egress`): such a delivery fails at once.
Receivers check the signature with `verify_signature` (or the same few lines in any language).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from cameofarm.cluster import egress
from cameofarm.cluster.egress import AllowRule, DestinationRefused
from cameofarm.configs import WebhookConfig
from cameofarm.monitoring.metrics import WEBHOOK_ATTEMPTS
from cameofarm.storage.db import Database, UserRow, WebhookDeliveryRow
from sqlalchemy import select

log = logging.getLogger("cameofarm.webhooks")
SIGNATURE_HEADER = "X-Cameofarm-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, tolerance: float = 300, now: float | None = None
) -> bool:
    """True when `header` is a valid signature of `body` made within `tolerance` seconds."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def deliver_due(db: Database, config: WebhookConfig, now: float | None = None) -> int:
    """Send every pending delivery whose time has come; return how many were attempted."""
    now = time.time() if now is None else now
    with db.session() as s:
        query = (
            select(WebhookDeliveryRow.id)
            .where(WebhookDeliveryRow.status == "PENDING", WebhookDeliveryRow.next_at <= now)
            .order_by(WebhookDeliveryRow.next_at)
            .limit(50)
        )
        due = list(s.scalars(query))
    for delivery_id in due:
        _attempt(db, config, delivery_id)
    return len(due)


def _attempt(db: Database, config: WebhookConfig, delivery_id: int) -> None:
    with db.session() as s:
        row = s.get(WebhookDeliveryRow, delivery_id)
        user = s.get(UserRow, row.user_id) if row else None
        if row is None or row.status != "PENDING":
            return
        url, body, event_job = row.url, row.body.encode(), row.job_id
        secret = (user.webhook_secret if user else None) or ""
    timestamp = int(time.time())
    event = _event_of(body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "cameofarm-webhooks/1",
        "X-Cameofarm-Event": event,
        "X-Cameofarm-Delivery": str(delivery_id),
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }
    allow = [AllowRule.parse(entry) for entry in config.allow_destinations]
    refused = False
    try:
        code = egress.post(url, body, headers, config.timeout_seconds, allow)
        error = None if 200 <= code < 300 else f"HTTP {code}"
        if 300 <= code < 400:
            error = f"HTTP {code} (redirects are not followed: give the final URL)"
    except DestinationRefused as exc:
        error, refused = f"destination refused: {exc}", True
    except Exception as exc:  # unreachable host, timeout, TLS failure
        error = f"{type(exc).__name__}: {exc}"
    with db.session() as s:
        row = s.get(WebhookDeliveryRow, delivery_id)
        if row is None:
            return
        row.attempts += 1
        row.last_error = error
        if error is None:
            row.status, outcome = "DELIVERED", "delivered"
        elif refused or row.attempts >= config.max_attempts:
            row.status, outcome = "FAILED", "refused" if refused else "failed"
            log.warning("webhook for %s failed %d times: %s", event_job, row.attempts, error)
        else:
            outcome = "retry"
            row.next_at = time.time() + config.backoff_seconds * 2 ** (row.attempts - 1)
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()


def _event_of(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body)["event"])
    except (ValueError, KeyError, TypeError):
        return "unknown"


def deliveries(db: Database, user: str, job_id: str | None = None) -> list[dict[str, object]]:
    """A user's webhook deliveries (for the API), newest first."""
    with db.session() as s:
        query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.user_id == user)
        if job_id is not None:
            query = query.where(WebhookDeliveryRow.job_id == job_id)
        rows = s.scalars(query.order_by(WebhookDeliveryRow.id.desc()).limit(100))
        return [
            {
                "id": r.id,
                "job_id": r.job_id,
                "status": r.status,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "next_at": r.next_at,
            }
            for r in rows
        ]
