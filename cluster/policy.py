"""Dispatch policy: plain data in, plain data out, no Ray.

Which queued jobs start now, given what runs and the tiers' limits:
- never more than `max_running_jobs` farm-wide, nor a tier's `max_running`;
- free slots go to the tier furthest below its capacity share (running / share), ties to the
  higher-priority tier;
- inside a tier: higher job priority first, then the customer with fewest running jobs
  (fairness), then submission order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    tier: str
    submitted_at: float
    priority: int = 0
    customer: str = ""


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    tier: str
    customer: str = ""


@dataclass(frozen=True)
class TierLimits:
    max_running: int
    capacity_share: float
    priority: int = 0


@dataclass(frozen=True)
class SchedulerInput:
    queued: tuple[QueuedJob, ...]
    running: tuple[RunningJob, ...]
    tiers: dict[str, TierLimits]
    max_running_jobs: int


@dataclass(frozen=True)
class SchedulerOutput:
    start: tuple[str, ...]
    waiting: dict[str, str] = field(default_factory=dict)  # tier → why its head waits


def _job_key(job: QueuedJob, customer_running: Counter[str]) -> tuple[int, int, float, str]:
    return (-job.priority, customer_running[job.customer], job.submitted_at, job.job_id)


def schedule(inp: SchedulerInput) -> SchedulerOutput:
    """Return the jobs to start now, in order, and why any tier's head must wait."""
    running_by_tier: Counter[str] = Counter(j.tier for j in inp.running)
    customer_running: Counter[str] = Counter(j.customer for j in inp.running)
    pending: dict[str, list[QueuedJob]] = {}
    waiting: dict[str, str] = {}
    for job in inp.queued:
        if job.tier not in inp.tiers:
            waiting[job.tier] = f"unknown tier {job.tier!r}"
            continue
        pending.setdefault(job.tier, []).append(job)
    free = inp.max_running_jobs - len(inp.running)
    started: list[str] = []
    while free > 0:
        eligible = [
            t
            for t, jobs in pending.items()
            if jobs and running_by_tier[t] < inp.tiers[t].max_running
        ]
        if not eligible:
            break
        tier = min(
            eligible,
            key=lambda t: (
                running_by_tier[t] / inp.tiers[t].capacity_share,
                -inp.tiers[t].priority,
                t,
            ),
        )
        jobs = pending[tier]
        best = min(jobs, key=lambda j: _job_key(j, customer_running))
        jobs.remove(best)
        started.append(best.job_id)
        running_by_tier[tier] += 1
        customer_running[best.customer] += 1
        free -= 1
    for tier, jobs in pending.items():
        if not jobs:
            continue
        if running_by_tier[tier] >= inp.tiers[tier].max_running:
            waiting[tier] = f"tier at its limit of {inp.tiers[tier].max_running} running"
        else:
            waiting[tier] = f"farm at its limit of {inp.max_running_jobs} running"
    return SchedulerOutput(tuple(started), waiting)
