"""Prometheus metrics of the farm's processes, and the endpoint each process serves them on.

Each process that does work serves its own registry (prometheus-client's default one):
the scheduler (dispatch, the render pipelines it runs, the stage pools it calls, purges,
webhooks; plus `monitoring.collectors` for what the database and the replicas' health
reports hold) and the API replica (requests, latency, rate limits). Stage replicas are not
scraped themselves: every call they make returns its timing to the scheduler, and their
restarts, model loads and GPU readings come back in the health reports the scheduler polls,
so one endpoint covers a pool however many nodes it spans. Ray's own node metrics (its
`--metrics-export-port`) are a separate scrape job (deploy/prometheus/prometheus.yml).

Labelled series are created at their first use, except where a dashboard or alert needs
a zero to compare against: `declare_series` makes those exist from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("cameofarm.metrics")

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)
_WAIT = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
_PER_FRAME = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_API = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# --- the scheduler process: jobs and stages -------------------------------------------------
QUEUE_WAIT_SECONDS = Histogram(
    "cameofarm_job_queue_wait_seconds",
    "Time a job waited in its tier's queue before each dispatch",
    ["tier"],
    buckets=_WAIT,
)
JOB_RUN_SECONDS = Histogram(
    "cameofarm_job_run_seconds",
    "Dispatch to end of one run of a job, by how it ended",
    ["tier", "status"],
    buckets=_SECONDS,
)
VOICE_RENDERS = Counter(
    "cameofarm_voice_renders",
    "Voices in published videos (a dialogue has two), by their voice report's verdict "
    "against the farm's targets (meets, below, or unjudged: not measured, or no targets "
    "for the speaker encoder) and whether a recogniser follows the words (clear, "
    "hard_to_follow, or unjudged: not English, or not measured)",
    ["tier", "verdict", "clarity"],
)
STAGE_SECONDS = Histogram(
    "cameofarm_stage_seconds",
    "Wall time of one render stage of one job (first call submitted to last call returned)",
    ["tier", "stage", "backend"],
    buckets=_SECONDS,
)
STAGE_CALL_SECONDS = Histogram(
    "cameofarm_stage_call_seconds",
    "Time a replica worked on one call (one chunk)",
    ["tier", "stage", "backend"],
    buckets=_SECONDS,
)
STAGE_FRAME_SECONDS = Histogram(
    "cameofarm_stage_frame_seconds",
    "Replica seconds per frame of one call (calls without frames are not counted)",
    ["tier", "stage", "backend"],
    buckets=_PER_FRAME,
)

# --- the scheduler process: the stage pools it calls ----------------------------------------
REPLICA_BUSY_SECONDS = Counter(
    "cameofarm_replica_busy_seconds",
    "Seconds a replica spent working on calls (its busy ratio is the rate of this)",
    ["stage", "replica"],
)
REPLICA_IN_FLIGHT = Gauge(
    "cameofarm_replica_in_flight_calls",
    "Calls sent to a replica that have not returned yet",
    ["stage", "replica"],
)
CALL_RETRIES = Counter(
    "cameofarm_stage_call_retries",
    "Calls tried again on another replica because theirs died or hung",
    ["stage", "reason"],
)
REPLICAS_DRAINED = Counter(
    "cameofarm_replica_drains",
    "Times a replica was taken out of rotation after failing repeatedly",
    ["stage", "replica"],
)
POOL_RESIZES = Counter(
    "cameofarm_pool_resizes",
    "Replicas the autoscaler added (direction=up) or removed (down), by stage",
    ["stage", "direction"],
)

# --- the scheduler process: housekeeping ----------------------------------------------------
WEBHOOK_ATTEMPTS = Counter(
    "cameofarm_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered; retry: failed, will be tried again; "
    "failed: gave up; refused: destination not allowed)",
    ["outcome"],
)
PURGES_DONE = Counter(
    "cameofarm_purges_completed", "Deleted cameos whose stored objects were all purged"
)

# --- the API replica ---------------------------------------------------------------------------
API_REQUESTS = Counter(
    "cameofarm_api_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
API_SECONDS = Histogram(
    "cameofarm_api_request_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=_API,
)
API_RATE_LIMITED = Counter(
    "cameofarm_api_rate_limited",
    "Requests refused by a rate limit, by limit (key, auth_failures, client_requests, "
    "jobs_per_day)",
    ["limit"],
)

JOB_END_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED", "REQUEUED")
VOICE_VERDICTS = ("meets", "below", "unjudged")
VOICE_CLARITIES = ("clear", "hard_to_follow", "unjudged")
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed", "refused")
RATE_LIMITS = ("key", "auth_failures", "client_requests", "jobs_per_day")


def declare_scheduler_series(tiers: Iterable[str], stages: Iterable[str]) -> None:
    """Create the scheduler's zero-valued series that alerts and dashboards compare against
    (a counter that never moved is 0, not absent)."""
    for stage in stages:
        for reason in ("hung", "lost"):
            CALL_RETRIES.labels(stage=stage, reason=reason)
    for tier in tiers:
        QUEUE_WAIT_SECONDS.labels(tier=tier)
        for status in JOB_END_STATUSES:
            JOB_RUN_SECONDS.labels(tier=tier, status=status)
        for verdict in VOICE_VERDICTS:
            for clarity in VOICE_CLARITIES:
                VOICE_RENDERS.labels(tier=tier, verdict=verdict, clarity=clarity)
    for outcome in WEBHOOK_OUTCOMES:
        WEBHOOK_ATTEMPTS.labels(outcome=outcome)


def count_voices(tier: str, quality: dict[str, Any] | None) -> None:
    """Count a published video's voices by their reports' verdicts (VOICE_RENDERS)."""
    quality = quality or {}
    cast = quality.get("cast") or [quality]
    for part in cast:
        voice = part.get("voice") or {}
        meets, clear = voice.get("meets_targets"), voice.get("clear")
        verdict = "unjudged" if meets is None else "meets" if meets else "below"
        clarity = "unjudged" if clear is None else "clear" if clear else "hard_to_follow"
        VOICE_RENDERS.labels(tier=tier, verdict=verdict, clarity=clarity).inc()


def declare_api_series() -> None:
    """Create the API's zero-valued rate-limit series."""
    for limit in RATE_LIMITS:
        API_RATE_LIMITED.labels(limit=limit)


def serve_metrics(host: str, port: int, what: str) -> str | None:
    """Serve this process's metrics on host:port; return the URL, or None when the port is
    0 (off) or taken (logged: a busy metrics port never stops the farm)."""
    if not port:
        return None
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning(
            "%s metrics not served: %s:%d is taken (%s); set monitoring.%s_port to a free "
            "port, or 0 to turn them off",
            what,
            host,
            port,
            exc.strerror or exc,
            what,
        )
        return None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/metrics"
