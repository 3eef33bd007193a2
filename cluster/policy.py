"""Dispatch policy: plain data in, plain data out, no Ray.

Which queued jobs start now, given what runs and the tiers' limits:
- never more than `max_running_jobs` farm-wide, nor a tier's `max_running`;
- never more frames in Ray's object store than it holds: a job of a tier holds up to its
  `memory_bytes` there while it renders, and a job starts only if that fits in what the
  running jobs leave of `memory_budget` (or if nothing runs: one job always may);
- free slots go to the tier furthest below its capacity share (running / share), ties to the
  higher-priority tier;
- inside a tier: higher job priority first, then the organisation with fewest running jobs,
  then the one served least recently (fair share: one organisation's thousand-row batch
  waits while another's single job takes the next free slot, even when the batch's last job
  has just ended), then its customer with fewest running jobs, then submission order. A job
  without an organisation is its customer's own share.

The policy is fed *heads*, not the whole queue: for every (tier, customer) the first jobs in
(priority, submission) order, as many as could start now (`heads_needed`). Whatever lies
behind them could not be chosen in this round anyway, so a Pro job queued behind 100,000 Plus
jobs is seen. The heads come indexed (`QueueIndex`: one ordered line per tier and customer,
as the database reads them), so a decision looks only at each line's first job and at the
jobs it starts: O(lines + started · log lines), whatever the queue's depth or the heads'
number.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def share_of(org: str, customer: str) -> str:
    """The fair-share key of a customer's jobs: their organisation, or themselves alone."""
    return org or f"customer:{customer}"


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    tier: str
    submitted_at: float
    priority: int = 0
    customer: str = ""
    org: str = ""

    @property
    def share(self) -> str:
        """Whose share of the farm the job runs under: its organisation's."""
        return share_of(self.org, self.customer)


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    tier: str
    customer: str = ""
    org: str = ""

    @property
    def share(self) -> str:
        return share_of(self.org, self.customer)


@dataclass(frozen=True)
class TierLimits:
    max_running: int
    capacity_share: float
    priority: int = 0
    memory_bytes: int = 0  # object store a running job of the tier may hold at most


def _order(job: QueuedJob) -> tuple[int, float, str]:
    return (-job.priority, job.submitted_at, job.job_id)


@dataclass(frozen=True)
class QueueIndex:
    """Queued jobs indexed by (tier, customer): each line in start order, best first."""

    lines: Mapping[tuple[str, str], Sequence[QueuedJob]]

    @classmethod
    def of(cls, jobs: Iterable[QueuedJob]) -> QueueIndex:
        """Index jobs in any order (groups and sorts them)."""
        lines: dict[tuple[str, str], list[QueuedJob]] = {}
        for job in jobs:
            lines.setdefault((job.tier, job.customer), []).append(job)
        for line in lines.values():
            line.sort(key=_order)
        return cls(lines)


@dataclass(frozen=True)
class SchedulerInput:
    """What the policy decides on.

    `queued` holds at least the first `heads_needed(...)` jobs of every (tier, customer) in
    (priority desc, submitted_at) order; more are allowed and change nothing. Given as a
    `QueueIndex` (lines already in order) the decision never touches the jobs behind each
    line's first; given as plain jobs they are indexed first.
    """

    queued: QueueIndex | tuple[QueuedJob, ...]
    running: tuple[RunningJob, ...]
    tiers: dict[str, TierLimits]
    max_running_jobs: int
    # When each share (`share_of`) last had a job dispatched; absent: not recently.
    last_started: dict[str, float] = field(default_factory=dict)
    memory_budget: int | None = None  # object store bytes the running jobs may hold (None: any)


@dataclass(frozen=True)
class SchedulerOutput:
    start: tuple[str, ...]
    waiting: dict[str, str] = field(default_factory=dict)  # tier → why its head waits
    jobs: tuple[QueuedJob, ...] = ()  # the started jobs, in `start`'s order


def heads_needed(tiers: dict[str, TierLimits], running: int, max_running_jobs: int) -> int:
    """How many jobs per (tier, customer) the policy may need to see: no more can start.

    At least one, so a tier whose head must wait is still seen and its reason reported.
    """
    free = max_running_jobs - running
    widest = max((t.max_running for t in tiers.values()), default=0)
    return max(1, min(free, widest))


# A heap entry: (-priority, the share's running count and last dispatch, the customer's
# running count, submitted_at, job id, customer). Counts only grow and dispatch times only
# move later, so an entry whose figures are stale sorts too early; it is re-pushed with the
# current figures when it surfaces (lazy update).
_Entry = tuple[int, int, float, int, float, str, str]
_NOW = float("inf")  # a share picked in this round was served after any recorded time


class _Running:
    """Running jobs per share (organisation) and per customer, and each share's last
    dispatch."""

    def __init__(self, running: tuple[RunningJob, ...], last_started: dict[str, float]) -> None:
        self.shares: Counter[str] = Counter(j.share for j in running)
        self.customers: Counter[str] = Counter(j.customer for j in running)
        self.last = dict(last_started)

    def of(self, job: QueuedJob) -> tuple[int, float, int]:
        last = self.last.get(job.share, float("-inf"))
        return self.shares[job.share], last, self.customers[job.customer]

    def add(self, job: QueuedJob) -> None:
        self.shares[job.share] += 1
        self.customers[job.customer] += 1
        self.last[job.share] = _NOW


class _TierQueue:
    """One tier's candidates: each customer's line (best first) and a position in it; the
    line's current job of each customer in a heap."""

    def __init__(self, lines: dict[str, Sequence[QueuedJob]], running: _Running) -> None:
        self._lines = lines
        self._at = dict.fromkeys(lines, 0)
        self._heap: list[_Entry] = []
        for customer, own in lines.items():
            job = own[0]
            self._heap.append(
                (-job.priority, *running.of(job), job.submitted_at, job.job_id, customer)
            )
        heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop_best(self, running: _Running) -> QueuedJob:
        """Take the job that starts next in this tier (the heap must not be empty)."""
        while True:
            entry = heapq.heappop(self._heap)
            customer = entry[6]
            own, at = self._lines[customer], self._at[customer]
            now = running.of(own[at])
            if entry[1:4] != now:  # stale figures: re-rank it
                heapq.heappush(self._heap, (entry[0], *now, *entry[4:]))
                continue
            job = own[at]
            self._at[customer] = at = at + 1
            if at < len(own):
                nxt = own[at]
                share, _, mine = running.of(nxt)
                # This pick is about to count: one more running, served now.
                figures = (share + 1, _NOW, mine + 1)
                heapq.heappush(
                    self._heap, (-nxt.priority, *figures, nxt.submitted_at, nxt.job_id, customer)
                )
            return job


def schedule(inp: SchedulerInput) -> SchedulerOutput:
    """Return the jobs to start now, in order, and why any tier's head must wait."""
    running_by_tier: Counter[str] = Counter(j.tier for j in inp.running)
    running = _Running(inp.running, inp.last_started)
    index = inp.queued if isinstance(inp.queued, QueueIndex) else QueueIndex.of(inp.queued)
    by_tier: dict[str, dict[str, Sequence[QueuedJob]]] = {}
    waiting: dict[str, str] = {}
    for (tier, customer), line in index.lines.items():
        if not line:
            continue
        if tier not in inp.tiers:
            waiting[tier] = f"unknown tier {tier!r}"
            continue
        by_tier.setdefault(tier, {})[customer] = line
    pending = {tier: _TierQueue(lines, running) for tier, lines in by_tier.items()}
    free = inp.max_running_jobs - len(inp.running)
    started: list[QueuedJob] = []
    held = sum(inp.tiers[j.tier].memory_bytes for j in inp.running if j.tier in inp.tiers)

    def fits(tier: str) -> bool:
        if inp.memory_budget is None or held == 0:
            return True
        return held + inp.tiers[tier].memory_bytes <= inp.memory_budget

    while free > 0:
        eligible = [
            t
            for t, q in pending.items()
            if q and running_by_tier[t] < inp.tiers[t].max_running and fits(t)
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
        best = pending[tier].pop_best(running)
        started.append(best)
        held += inp.tiers[tier].memory_bytes
        running_by_tier[tier] += 1
        running.add(best)
        free -= 1
    for tier, queue in pending.items():
        if not queue:
            continue
        if running_by_tier[tier] >= inp.tiers[tier].max_running:
            waiting[tier] = f"tier at its limit of {inp.tiers[tier].max_running} running"
        elif not fits(tier):
            waiting[tier] = (
                f"object store full: running jobs hold up to {held / 2**20:.0f} MiB of "
                f"{(inp.memory_budget or 0) / 2**20:.0f} MiB, a {tier} job needs "
                f"{inp.tiers[tier].memory_bytes / 2**20:.0f} MiB"
            )
        else:
            waiting[tier] = f"farm at its limit of {inp.max_running_jobs} running"
    return SchedulerOutput(tuple(j.job_id for j in started), waiting, tuple(started))
