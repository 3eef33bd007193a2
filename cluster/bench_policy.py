"""`cameofarm bench policy`: how long dispatch takes as the queues grow.

Fills a scratch database with N queued jobs (mostly Plus, a few Pro, spread over customers),
then times what one scheduler tick does before it dispatches: count the queues, read each
(tier, customer)'s heads, and let the policy decide. Prints p50/max per queue size.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from cameofarm.cluster.jobs import read_queues
from cameofarm.cluster.policy import (
    QueueIndex,
    SchedulerInput,
    TierLimits,
    heads_needed,
    schedule,
)
from cameofarm.configs import FarmConfig
from cameofarm.storage.db import Database, JobRow, default_sqlite_url


@dataclass(frozen=True)
class PolicyTiming:
    queued: int
    heads: int
    started: int
    read_ms_p50: float
    decide_ms_p50: float
    decide_ms_max: float


def _fill(db: Database, n: int, customers: int) -> None:
    now = time.time()
    batch = 20_000
    for first in range(0, n, batch):
        with db.session() as s:
            s.add_all(
                JobRow(
                    id=f"job_b{i:010d}",
                    # One job in 50 is Pro, submitted late: behind most of the Plus queue.
                    tier="pro" if i % 50 == 49 else "plus",
                    status="QUEUED",
                    customer=f"cust{i % customers:04d}",
                    priority=1 if i % 97 == 0 else 0,
                    cameo_ids=["cam_bench"],
                    script="Bench.",
                    submitted_at=now - n + i,
                    attempts=0,
                    progress=0.0,
                    stage="",
                )
                for i in range(first, min(n, first + batch))
            )


def measure_policy(
    config: FarmConfig,
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
    customers: int = 100,
    repeats: int = 20,
    echo: Callable[[str], None] = print,
    slots: int | None = None,
) -> list[PolicyTiming]:
    """Time reading queue heads and deciding, at each queue size; print one line each.

    `slots`: free slots to fill in each decision (default: the farm's max_running_jobs); a
    tier may then run up to that many too, so every slot is filled."""
    max_running = slots or config.scheduler.max_running_jobs
    tiers = {
        n: TierLimits(max(t.max_running, slots or 0), t.capacity_share, t.priority)
        for n, t in config.tiers.items()
    }
    results = []
    echo(
        f"dispatch policy, {customers} customers, farm limit {max_running} running, {repeats} ticks"
    )
    columns = ("queued", 8), ("heads", 6), ("start", 5), ("read p50", 9), ("decide p50", 11)
    echo(" ".join(f"{name:>{width}}" for name, width in (*columns, ("decide max", 11))))
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="cameofarm-policy-") as tmp:
            db = Database(default_sqlite_url(tmp))
            _fill(db, size, customers)
            reads, decides = [], []
            out = None
            heads = QueueIndex({})
            for _ in range(repeats):
                t0 = time.perf_counter()
                heads = read_queues(db, heads_needed(tiers, 0, max_running)).heads
                t1 = time.perf_counter()
                out = schedule(SchedulerInput(heads, (), tiers, max_running))
                t2 = time.perf_counter()
                reads.append((t1 - t0) * 1000)
                decides.append((t2 - t1) * 1000)
            db.dispose()
        assert out is not None
        timing = PolicyTiming(
            size,
            sum(len(line) for line in heads.lines.values()),
            len(out.start),
            statistics.median(reads),
            statistics.median(decides),
            max(decides),
        )
        results.append(timing)
        echo(
            f"{size:>8} {timing.heads:>6} {timing.started:>5} {timing.read_ms_p50:>7.1f}ms "
            f"{timing.decide_ms_p50:>9.2f}ms {timing.decide_ms_max:>9.2f}ms"
        )
    return results
