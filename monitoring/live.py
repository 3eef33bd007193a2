"""The farm's queues as `cameofarm top` shows them: per tier, now and over a recent window.

Read from the metadata database, so it counts every job whoever submitted it and holds
whether or not the scheduler answers; the scheduler's own report (pools, replicas, each
running job's stages) is joined to it by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from cameofarm.configs import FarmConfig
from cameofarm.storage.db import Database, JobRow
from sqlalchemy import func, select


class TierLive(TypedDict):
    """One tier: its queue now, and what it did in the last `window_s` seconds."""

    tier: str
    queued: int
    running: int
    oldest_wait_s: float  # the oldest queued job's wait so far (0 when none waits)
    wait_objective_s: float
    started: int  # dispatches in the window
    finished: dict[str, int]  # jobs that ended in the window, by final status
    succeeded_per_minute: float
    wait_p50_s: float | None  # submission to (latest) start, of jobs started in the window
    wait_p95_s: float | None
    run_p50_s: float | None  # start to publication, of jobs that succeeded in the window


def _percentile(values: Sequence[float], q: float) -> float | None:
    """As the bench computes it (numpy's linear interpolation); None for no values."""
    return float(np.percentile(values, q)) if values else None


def read_tiers(db: Database, config: FarmConfig, now: float, window_s: float) -> list[TierLive]:
    """Every configured tier's queue and recent throughput, in config order."""
    since = now - window_s
    with db.session() as s:
        current = s.execute(
            select(JobRow.tier, JobRow.status, func.count(), func.min(JobRow.submitted_at))
            .where(JobRow.status.in_(("QUEUED", "RUNNING")))
            .group_by(JobRow.tier, JobRow.status)
        ).all()
        starts = s.execute(
            select(JobRow.tier, JobRow.started_at - JobRow.submitted_at).where(
                JobRow.started_at >= since
            )
        ).all()
        ends = s.execute(
            select(JobRow.tier, JobRow.status, JobRow.finished_at - JobRow.started_at).where(
                JobRow.finished_at >= since
            )
        ).all()
    queued = {t: (n, first) for t, status, n, first in current if status == "QUEUED"}
    running = {t: n for t, status, n, _ in current if status == "RUNNING"}
    views: list[TierLive] = []
    for name, tier in config.tiers.items():
        waits = [float(w) for t, w in starts if t == name and w is not None]
        finished: dict[str, int] = {}
        runs = []
        for t, status, took in ends:
            if t != name:
                continue
            finished[status] = finished.get(status, 0) + 1
            if status == "SUCCEEDED" and took is not None:
                runs.append(float(took))
        count, first = queued.get(name, (0, None))
        views.append(
            TierLive(
                tier=name,
                queued=count,
                running=running.get(name, 0),
                oldest_wait_s=max(0.0, now - first) if first is not None else 0.0,
                wait_objective_s=tier.wait_objective_seconds,
                started=len(waits),
                finished=finished,
                succeeded_per_minute=finished.get("SUCCEEDED", 0) * 60.0 / window_s,
                wait_p50_s=_percentile(waits, 50),
                wait_p95_s=_percentile(waits, 95),
                run_p50_s=_percentile(runs, 50),
            )
        )
    return views
