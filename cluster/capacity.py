"""`cameofarm simulate`: a farm of N GPUs under Poisson load, dispatched by the real policy,
with each job's stage costs drawn from stage calls this farm recorded.

The model:
- **Costs.** Every job that succeeded on its first attempt is a recorded profile: per stage
  (in pipeline order) the seconds of each of its calls, plus the time it held its slot
  outside the stages (planning, quality measurement, publishing). A simulated job of a tier
  replays one of that tier's profiles, drawn at random; `cost_scale` multiplies every
  recorded second (e.g. 0.1 for nodes ten times faster than the machine that recorded them).
- **Pools.** The GPUs are split between the stage pools in proportion to the load each
  stage carries at the given rates (call seconds × the pool's GPU share per replica), each
  replica holding its pool's configured `num_gpus`. A replica that frees takes the waiting
  call of the earliest priority, as the farm's replicas do (`StageActor.call`): the tier
  with the shortest videos first, then the job that started first, then its earlier call.
  A job moves to its next stage when all the calls of the current one are done (the farm
  streams chunks from stage to stage; here a stage waits for all of them).
- **Dispatch.** Every `tick_seconds` while jobs wait and slots are free, the real
  `policy.schedule` decides which start, with the farm's running limits scaled from the
  GPUs its config declares to the simulated GPUs. Jobs come from `customers` customers.

Queue waits are those of jobs that started; jobs still queued at the end count with their
wait so far (a lower bound), so an overloaded farm shows it. Beside GPU busy, the share of
job slots in use says which limit binds: a farm whose slots are full while its GPUs idle
needs higher running limits, not more GPUs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.cluster.policy import (
    QueuedJob,
    QueueIndex,
    RunningJob,
    SchedulerInput,
    TierLimits,
    schedule,
)
from cameofarm.configs import FarmConfig, StageName
from cameofarm.storage.db import Database, JobRow, StageTimingRow
from sqlalchemy import select

PIPELINE = (
    StageName.VOICE.value,
    StageName.BASE_VIDEO.value,
    StageName.FACE_SWAP.value,
    StageName.LIP_SYNC.value,
    StageName.COMPOSITE.value,
)


class SimulationError(ValueError):
    """The simulation cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class JobCost:
    """One recorded job: each stage's call seconds in pipeline order, and the seconds it
    held its slot outside the stages."""

    tier: str
    stages: tuple[tuple[str, tuple[float, ...]], ...]
    overhead: float


def recorded_costs(db: Database) -> dict[str, list[JobCost]]:
    """Every job that succeeded on its first attempt and has stage timings, by tier."""
    with db.session() as s:
        jobs = {
            job_id: (tier, started, finished)
            for job_id, tier, started, finished in s.execute(
                select(JobRow.id, JobRow.tier, JobRow.started_at, JobRow.finished_at).where(
                    JobRow.status == "SUCCEEDED", JobRow.attempts == 1
                )
            )
        }
        rows = s.execute(
            select(
                StageTimingRow.job_id,
                StageTimingRow.stage,
                StageTimingRow.seconds,
                StageTimingRow.submitted_at,
                StageTimingRow.finished_at,
            ).where(StageTimingRow.attempt == 1)
        ).all()
    calls: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for job_id, stage, seconds, asked, done in rows:
        if job_id in jobs:
            calls.setdefault(job_id, {}).setdefault(stage, []).append((seconds, asked, done))
    costs: dict[str, list[JobCost]] = {}
    for job_id, stages in calls.items():
        tier, started, finished = jobs[job_id]
        if started is None or finished is None or not set(PIPELINE) <= set(stages):
            continue
        walls = sum(
            max(d for _, _, d in own) - min(a for _, a, _ in own) for own in stages.values()
        )
        costs.setdefault(tier, []).append(
            JobCost(
                tier,
                tuple((stage, tuple(c[0] for c in stages[stage])) for stage in PIPELINE),
                max(0.0, (finished - started) - walls),
            )
        )
    return costs


@dataclass(frozen=True)
class FarmPlan:
    """The simulated farm: replicas and GPU share per stage pool, and its running limits."""

    gpus: int
    replicas: dict[str, int]
    gpu_share: dict[str, float]
    max_running_jobs: int
    tiers: dict[str, TierLimits]
    rank: dict[str, float] = field(default_factory=dict)  # a tier's call priority (max seconds)

    @property
    def gpus_used(self) -> float:
        return sum(self.replicas[s] * self.gpu_share[s] for s in self.replicas)


def plan_farm(
    config: FarmConfig,
    costs: dict[str, list[JobCost]],
    rates: dict[str, float],
    gpus: int,
    max_running_jobs: int | None = None,
) -> FarmPlan:
    """Split `gpus` between the stage pools by the load each carries at `rates` (jobs per
    hour per tier), and scale the config's running limits to them (or, with
    `max_running_jobs`, to that farm-wide limit, the tiers' limits in the config's ratio)."""
    share = {s: config.pools[StageName(s)].num_gpus or 1.0 for s in PIPELINE}
    if gpus < sum(share.values()):
        raise SimulationError(
            f"--gpus {gpus} cannot hold one replica of each stage pool "
            f"({sum(share.values()):g} GPUs at the config's num_gpus)"
        )
    load = dict.fromkeys(PIPELINE, 0.0)
    for tier, rate in rates.items():
        profiles = costs[tier]
        for stage in PIPELINE:
            mean = sum(sum(dict(p.stages)[stage]) for p in profiles) / len(profiles)
            load[stage] += rate * mean * share[stage]
    total = sum(load.values())
    replicas = {
        s: max(1, math.floor(gpus * load[s] / total / share[s]) if total > 0 else 1)
        for s in PIPELINE
    }
    declared = sum(p.replicas * p.num_gpus for p in config.pools.values()) or 1.0
    used = sum(replicas[s] * share[s] for s in PIPELINE)
    factor = (
        max_running_jobs / config.scheduler.max_running_jobs
        if max_running_jobs
        else used / declared
    )
    tiers = {
        name: TierLimits(max(1, round(t.max_running * factor)), t.capacity_share, t.priority)
        for name, t in config.tiers.items()
    }
    limit = max(1, round(config.scheduler.max_running_jobs * factor))
    rank = {name: t.max_seconds for name, t in config.tiers.items()}
    return FarmPlan(gpus, replicas, share, limit, tiers, rank)


@dataclass
class TierFigures:
    arrived: int = 0
    started: int = 0
    finished: int = 0
    still_queued: int = 0
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)  # start to finish, of the jobs that ended
    slot_seconds: float = 0.0  # its running jobs integrated over the window

    def wait(self, q: float) -> float | None:
        return float(np.percentile(self.waits, q)) if self.waits else None

    def run(self, q: float) -> float | None:
        return float(np.percentile(self.runs, q)) if self.runs else None


@dataclass
class SimResult:
    """What a simulation measured."""

    plan: FarmPlan
    hours: float
    tiers: dict[str, TierFigures]
    busy_seconds: dict[str, float]  # call seconds per stage inside the window
    timeline: dict[str, list[float]]  # sampled: t (s), queued and running per tier, busy %
    seconds_taken: float = 0.0

    def slots_used(self, tier: str | None = None) -> float:
        """Average share of the job slots in use: the farm's (max_running_jobs), or a
        tier's (its max_running)."""
        window = self.hours * 3600.0
        if tier is not None:
            return self.tiers[tier].slot_seconds / (self.plan.tiers[tier].max_running * window)
        used = sum(t.slot_seconds for t in self.tiers.values())
        return used / (self.plan.max_running_jobs * window)

    def gpu_busy(self, stage: str | None = None) -> float:
        """Share of the GPUs' time spent in stage calls (one stage's, or all)."""
        window = self.hours * 3600.0
        stages = [stage] if stage else list(self.busy_seconds)
        used = sum(self.busy_seconds[s] * self.plan.gpu_share[s] for s in stages)
        return used / (self.plan.gpus * window)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": self.plan.gpus,
            "hours": self.hours,
            "replicas": self.plan.replicas,
            "max_running_jobs": self.plan.max_running_jobs,
            "gpu_busy": round(self.gpu_busy(), 4),
            "gpu_busy_by_stage": {s: round(self.gpu_busy(s), 4) for s in self.busy_seconds},
            "slots_used": round(self.slots_used(), 4),
            "tiers": {
                name: {
                    "arrived": t.arrived,
                    "started": t.started,
                    "finished": t.finished,
                    "still_queued": t.still_queued,
                    "jobs_per_hour": round(t.finished / self.hours, 1),
                    "wait_p50_s": _round(t.wait(50)),
                    "wait_p95_s": _round(t.wait(95)),
                    "run_p50_s": _round(t.run(50)),
                    "run_p95_s": _round(t.run(95)),
                    "slots_used": round(self.slots_used(name), 4),
                }
                for name, t in self.tiers.items()
            },
        }


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


@dataclass
class _Job:
    queued: QueuedJob
    cost: JobCost
    stage: int = 0
    started: float = 0.0
    calls_left: int = 0  # of its current stage


def simulate(
    plan: FarmPlan,
    costs: dict[str, list[JobCost]],
    rates: dict[str, float],
    hours: float,
    *,
    customers: int = 20,
    seed: int = 0,
    tick_seconds: float = 0.5,
    cost_scale: float = 1.0,
    samples: int = 240,
    progress: Callable[[float], None] = lambda _fraction: None,
) -> SimResult:
    """Run the farm for `hours` under Poisson arrivals at `rates` (jobs per hour per tier)."""
    rng = random.Random(seed)
    end = hours * 3600.0
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(at: float, kind: str, payload: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, payload))

    for tier, rate in rates.items():
        if rate > 0:
            push(rng.expovariate(rate / 3600.0), "arrive", tier)
    free = dict(plan.replicas)  # replicas of each stage without a call
    # Calls waiting for a replica, by the farm's priority: (tier rank, job start, call).
    asked: dict[str, list[tuple[tuple[float, float, int], int, _Job, float]]] = {
        s: [] for s in plan.replicas
    }
    busy = dict.fromkeys(plan.replicas, 0.0)
    figures = {tier: TierFigures() for tier in plan.tiers}
    lines: dict[tuple[str, str], deque[QueuedJob]] = {}
    waiting: dict[str, _Job] = {}
    running: dict[str, RunningJob] = {}
    served: dict[str, float] = {}
    queued_by_tier: Counter[str] = Counter()
    running_by_tier: Counter[str] = Counter()
    step = end / samples
    timeline: dict[str, list[float]] = {"t": [], "busy": []}
    for tier in plan.tiers:
        timeline[f"queued:{tier}"] = []
        timeline[f"running:{tier}"] = []
    bucket_busy = [0.0] * (samples + 1)
    next_sample = 0.0
    tick_pending = False
    jobs = 0
    last_event = 0.0

    def count_slots(until: float) -> None:
        nonlocal last_event
        for tier, n in running_by_tier.items():
            figures[tier].slot_seconds += n * (until - last_event)
        last_event = until

    def want_tick(now: float) -> None:
        nonlocal tick_pending
        if not tick_pending:
            tick_pending = True
            push(math.ceil(now / tick_seconds + 1e-9) * tick_seconds, "tick")

    def enter_stage(job: _Job, now: float) -> None:
        nonlocal seq
        if job.stage == len(job.cost.stages):
            push(now + job.cost.overhead * cost_scale, "finish", job)
            return
        stage, calls = job.cost.stages[job.stage]
        job.calls_left = len(calls)
        if not calls:
            job.stage += 1
            enter_stage(job, now)
            return
        rank = plan.rank.get(job.queued.tier, 0.0)
        for i, seconds in enumerate(calls):
            seq += 1
            heapq.heappush(asked[stage], ((rank, job.started, i), seq, job, seconds * cost_scale))
        serve(stage, now)

    def serve(stage: str, now: float) -> None:
        """Each free replica of the stage takes the waiting call of the earliest priority."""
        waiting_calls = asked[stage]
        while free[stage] and waiting_calls:
            _, _, job, seconds = heapq.heappop(waiting_calls)
            free[stage] -= 1
            finish = now + seconds
            inside = max(0.0, min(finish, end) - min(now, end))
            busy[stage] += inside
            bucket_busy[min(samples, int(now / step))] += inside * plan.gpu_share[stage]
            push(finish, "call", (stage, job))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if now > end:
            break
        count_slots(now)
        while next_sample <= now:
            timeline["t"].append(next_sample)
            for tier in plan.tiers:
                timeline[f"queued:{tier}"].append(queued_by_tier[tier])
                timeline[f"running:{tier}"].append(running_by_tier[tier])
            next_sample += step
            progress(min(1.0, next_sample / end))
        if kind == "arrive":
            tier = payload
            jobs += 1
            customer = f"customer-{rng.randrange(customers)}"
            queued = QueuedJob(f"sim{jobs}", tier, now, 0, customer)
            waiting[queued.job_id] = _Job(queued, rng.choice(costs[tier]))
            lines.setdefault((tier, customer), deque()).append(queued)
            figures[tier].arrived += 1
            queued_by_tier[tier] += 1
            push(now + rng.expovariate(rates[tier] / 3600.0), "arrive", tier)
            want_tick(now)
        elif kind == "tick":
            tick_pending = False
            if not waiting or len(running) >= plan.max_running_jobs:
                continue
            out = schedule(
                SchedulerInput(
                    QueueIndex(lines),
                    tuple(running.values()),
                    plan.tiers,
                    plan.max_running_jobs,
                    dict(served),
                )
            )
            for head in out.jobs:
                if lines[(head.tier, head.customer)].popleft() is not head:
                    raise RuntimeError("the policy started a job out of its line's order")
                job = waiting.pop(head.job_id)
                running[head.job_id] = RunningJob(head.job_id, head.tier, head.customer)
                served[head.share] = now
                figures[head.tier].started += 1
                figures[head.tier].waits.append(now - head.submitted_at)
                queued_by_tier[head.tier] -= 1
                running_by_tier[head.tier] += 1
                job.started = now
                enter_stage(job, now)
        elif kind == "call":
            stage, job = payload
            free[stage] += 1
            job.calls_left -= 1
            if job.calls_left == 0:
                job.stage += 1
                enter_stage(job, now)
            serve(stage, now)
        else:  # finish
            job = payload
            del running[job.queued.job_id]
            figures[job.queued.tier].finished += 1
            figures[job.queued.tier].runs.append(now - job.started)
            running_by_tier[job.queued.tier] -= 1
            if waiting:
                want_tick(now)
    count_slots(end)
    for job in waiting.values():  # still queued: their wait so far, a lower bound
        figures[job.queued.tier].still_queued += 1
        figures[job.queued.tier].waits.append(end - job.queued.submitted_at)
    whole = [i for i, t in enumerate(timeline["t"]) if t + step <= end + 1e-9]  # not the last
    for key in list(timeline):
        timeline[key] = [timeline[key][i] for i in whole] if key != "busy" else []
    timeline["busy"] = [100.0 * bucket_busy[i] / (plan.gpus * step) for i in whole]
    timeline["slots"] = [
        100.0 * sum(timeline[f"running:{tier}"][i] for tier in plan.tiers) / plan.max_running_jobs
        for i in range(len(whole))
    ]
    progress(1.0)
    return SimResult(plan, hours, figures, busy, timeline)


def report_lines(result: SimResult, rates: dict[str, float], cost_note: str) -> list[str]:
    """The simulation's figures as the CLI prints them."""
    plan = result.plan
    pools = ", ".join(
        f"{s} {plan.replicas[s]}×{plan.gpu_share[s]:g}" for s in PIPELINE if s in plan.replicas
    )
    lines = [
        f"simulated {result.hours:g} h on {plan.gpus} GPUs ({plan.gpus_used:g} in pools: "
        f"{pools}); at most {plan.max_running_jobs} jobs running "
        f"({', '.join(f'{n} {t.max_running}' for n, t in plan.tiers.items())})",
        f"costs: {cost_note}",
        f"GPU busy {100 * result.gpu_busy():.1f} % ("
        + ", ".join(f"{s} {100 * result.gpu_busy(s):.1f} %" for s in result.busy_seconds)
        + f"); job slots in use {100 * result.slots_used():.1f} %",
        f"{'tier':<6} {'rate/h':>8} {'jobs/h':>8} {'wait p50':>9} {'wait p95':>9} "
        f"{'run p95':>9} {'slots used':>10} {'started':>8} {'queued at end':>14}",
    ]
    for name, t in result.tiers.items():
        p50, p95 = t.wait(50), t.wait(95)
        lines.append(
            f"{name:<6} {rates.get(name, 0.0):>8g} {t.finished / result.hours:>8.1f} "
            f"{_seconds(p50):>9} {_seconds(p95):>9} {_seconds(t.run(95)):>9} "
            f"{100 * result.slots_used(name):>9.1f}% {t.started:>8} {t.still_queued:>14}"
        )
    overloaded = [n for n, t in result.tiers.items() if t.still_queued > max(10, t.arrived // 20)]
    if overloaded:
        full = any(result.slots_used(n) > 0.9 for n in overloaded) or result.slots_used() > 0.9
        in_pools = plan.gpus_used / plan.gpus  # the GPUs replicas hold
        slots_bound = full and result.gpu_busy() < 0.8 * in_pools
        remedy = (
            "its job slots are full while GPUs idle: raise the running limits "
            "(scheduler.max_running_jobs, tiers.*.max_running; here --max-running)"
            if slots_bound
            else "add GPUs or lower the rates"
        )
        lines.append(
            f"the queue of {', '.join(overloaded)} grew to the end: this farm cannot keep up "
            f"with these rates (its waits are lower bounds); {remedy}"
        )
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def plot_simulation(result: SimResult, path: str | Path) -> Path:
    """Queues, running jobs and GPU busy over time, and each tier's waits, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(result.timeline["t"]) / 3600.0
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(9, 9), constrained_layout=True)
    for tier in result.tiers:
        top.plot(t, result.timeline[f"queued:{tier}"], label=f"{tier} queued")
        top.plot(t, result.timeline[f"running:{tier}"], "--", label=f"{tier} running")
    top.set_ylabel("jobs")
    top.set_title(f"{result.plan.gpus} GPUs: queues and running jobs")
    top.legend(loc="upper left")
    mid.plot(t, result.timeline["busy"], color="tab:red", label="GPU busy")
    mid.plot(t, result.timeline["slots"], color="tab:purple", label="job slots in use")
    mid.set_ylim(0, 105)
    mid.set_ylabel("%")
    mid.set_xlabel("hours")
    mid.legend(loc="lower right")
    for tier, figures in result.tiers.items():
        if figures.waits:
            waits = np.sort(figures.waits)
            low.plot(waits, np.linspace(0, 1, len(waits)), label=tier)
    low.set_xscale("symlog", linthresh=1.0)
    low.set_xlabel("queue wait (s)")
    low.set_ylabel("share of jobs")
    low.legend(loc="lower right")
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
