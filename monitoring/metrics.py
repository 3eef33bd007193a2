"""Prometheus metrics, labelled by tier and stage."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640)

STAGE_SECONDS = Histogram(
    "cameofarm_stage_seconds",
    "Wall time of one render stage of one job",
    ["tier", "stage"],
    buckets=_BUCKETS,
)
STAGE_CALL_SECONDS = Histogram(
    "cameofarm_stage_call_seconds",
    "Wall time of one actor call (one chunk)",
    ["tier", "stage"],
    buckets=_BUCKETS,
)
JOB_SECONDS = Histogram(
    "cameofarm_job_seconds",
    "Dispatch-to-published time of a job",
    ["tier"],
    buckets=_BUCKETS,
)
JOBS_FINISHED = Counter("cameofarm_jobs_finished", "Jobs that left RUNNING", ["tier", "status"])
QUEUE_DEPTH = Gauge("cameofarm_queue_depth", "Jobs waiting per tier", ["tier"])
RUNNING_JOBS = Gauge("cameofarm_running_jobs", "Jobs running per tier", ["tier"])
