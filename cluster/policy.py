"""Dispatch policy: plain data in, plain data out, no Ray.

Which queued jobs start now, given what runs and the tiers' limits:
- never more than `max_running_jobs` farm-wide, nor a tier's `max_running`;
- free slots go to the tier furthest below its capacity share (running / share), ties to the
  higher-priority tier;
- inside a tier: higher job priority first, then the customer with fewest running jobs
  (fairness), then submission order.

The policy is fed *heads*, not the whole queue: for every (tier, customer) the first jobs in
(priority, submission) order, as many as could start now (`heads_needed`). Whatever lies
behind them could not be chosen in this round anyway, so a Pro job queued behind 100,000 Plus
jobs is seen, and the decision costs O(heads · log heads) whatever the queue's depth.
"""

from __future__ import annotations

import heapq
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
    """What the policy decides on.

    `queued` holds at least the first `heads_needed(...)` jobs of every (tier, customer) in
    (priority desc, submitted_at) order; more are allowed and change nothing.
    """

    queued: tuple[QueuedJob, ...]
    running: tuple[RunningJob, ...]
    tiers: dict[str, TierLimits]
    max_running_jobs: int


@dataclass(frozen=True)
class SchedulerOutput:
    start: tuple[str, ...]
    waiting: dict[str, str] = field(default_factory=dict)  # tier → why its head waits


def heads_needed(tiers: dict[str, TierLimits], running: int, max_running_jobs: int) -> int:
    """How many jobs per (tier, customer) the policy may need to see: no more can start.

    At least one, so a tier whose head must wait is still seen and its reason reported.
    """
    free = max_running_jobs - running
    widest = max((t.max_running for t in tiers.values()), default=0)
    return max(1, min(free, widest))


def _order(job: QueuedJob) -> tuple[int, float, str]:
    return (-job.priority, job.submitted_at, job.job_id)


# A heap entry: (-priority, customer's running count when pushed, submitted_at, job id,
# customer). The running count only grows, so an entry whose count is stale sorts too early;
# it is re-pushed with the current count when it surfaces (lazy update).
_Entry = tuple[int, int, float, str, str]


class _TierQueue:
    """One tier's candidates: each customer's heads in order, the best of each in a heap."""

    def __init__(self, jobs: list[QueuedJob], customer_running: Counter[str]) -> None:
        by_customer: dict[str, list[QueuedJob]] = {}
        for job in jobs:
            by_customer.setdefault(job.customer, []).append(job)
        self._next: dict[str, list[QueuedJob]] = {}
        self._heap: list[_Entry] = []
        for customer, own in by_customer.items():
            own.sort(key=_order, reverse=True)  # best last: pop() is O(1)
            self._next[customer] = own
            self._push(customer, customer_running)
        heapq.heapify(self._heap)

    def _push(self, customer: str, customer_running: Counter[str]) -> None:
        own = self._next[customer]
        if own:
            job = own[-1]
            entry = (-job.priority, customer_running[customer], job.submitted_at, job.job_id)
            self._heap.append((*entry, customer))

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop_best(self, customer_running: Counter[str]) -> QueuedJob:
        """Take the job that starts next in this tier (the heap must not be empty)."""
        while True:
            entry = heapq.heappop(self._heap)
            customer = entry[4]
            if entry[1] != customer_running[customer]:  # stale count: re-rank it
                heapq.heappush(self._heap, (entry[0], customer_running[customer], *entry[2:]))
                continue
            job = self._next[customer].pop()
            own = self._next[customer]
            if own:
                nxt = own[-1]
                heapq.heappush(
                    self._heap,
                    (
                        -nxt.priority,
                        customer_running[customer] + 1,  # this pick is about to count
                        nxt.submitted_at,
                        nxt.job_id,
                        customer,
                    ),
                )
            return job


def schedule(inp: SchedulerInput) -> SchedulerOutput:
    """Return the jobs to start now, in order, and why any tier's head must wait."""
    running_by_tier: Counter[str] = Counter(j.tier for j in inp.running)
    customer_running: Counter[str] = Counter(j.customer for j in inp.running)
    by_tier: dict[str, list[QueuedJob]] = {}
    waiting: dict[str, str] = {}
    for job in inp.queued:
        if job.tier not in inp.tiers:
            waiting[job.tier] = f"unknown tier {job.tier!r}"
            continue
        by_tier.setdefault(job.tier, []).append(job)
    pending = {tier: _TierQueue(jobs, customer_running) for tier, jobs in by_tier.items()}
    free = inp.max_running_jobs - len(inp.running)
    started: list[str] = []
    while free > 0:
        eligible = [
            t for t, q in pending.items() if q and running_by_tier[t] < inp.tiers[t].max_running
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
        best = pending[tier].pop_best(customer_running)
        started.append(best.job_id)
        running_by_tier[tier] += 1
        customer_running[best.customer] += 1
        free -= 1
    for tier, queue in pending.items():
        if not queue:
            continue
        if running_by_tier[tier] >= inp.tiers[tier].max_running:
            waiting[tier] = f"tier at its limit of {inp.tiers[tier].max_running} running"
        else:
            waiting[tier] = f"farm at its limit of {inp.max_running_jobs} running"
    return SchedulerOutput(tuple(started), waiting)
