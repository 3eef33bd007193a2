"""Benchmark report: per tier and stage p50/p95 seconds, throughput and overhead ratio."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from cameofarm.configs import StageName
from cameofarm.storage.db import Database, JobRow, StageTimingRow
from sqlalchemy import select


@dataclass(frozen=True)
class StageStats:
    tier: str
    stage: str
    jobs: int
    p50: float
    p95: float
    wait_mean: float
    frames_per_second: float


@dataclass(frozen=True)
class TierStats:
    tier: str
    jobs: int
    jobs_per_minute: float
    run_p50: float
    overhead_mean: float
    overhead_max: float


@dataclass(frozen=True)
class BenchReport:
    stages: list[StageStats]
    tiers: list[TierStats]
    failed: list[str]


def _stage_walls(rows: list[StageTimingRow]) -> dict[str, tuple[float, int, float]]:
    """Per stage: (wall from first submit to last finish, frames, mean wait for a replica)."""
    spans: dict[str, list[StageTimingRow]] = defaultdict(list)
    for r in rows:
        spans[r.stage].append(r)
    return {
        stage: (
            max(r.finished_at for r in rs) - min(r.submitted_at for r in rs),
            sum(r.frames for r in rs if r.frames),
            float(np.mean([max(0.0, r.started_at - r.submitted_at) for r in rs])),
        )
        for stage, rs in spans.items()
    }


def load_runs(
    db: Database, job_ids: list[str]
) -> tuple[dict[str, JobRow], dict[str, list[StageTimingRow]]]:
    """The jobs, and per job the timing rows of its last attempt (the one that counts)."""
    with db.session() as s:
        jobs = {j.id: j for j in s.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))}
        rows = list(s.scalars(select(StageTimingRow).where(StageTimingRow.job_id.in_(job_ids))))
    by_job: dict[str, list[StageTimingRow]] = defaultdict(list)
    for r in rows:
        if jobs.get(r.job_id) is not None and r.attempt == jobs[r.job_id].attempts:
            by_job[r.job_id].append(r)
    return jobs, by_job


def stage_walls(rows: list[StageTimingRow]) -> dict[str, float]:
    """Per stage of one job: seconds from its first call submitted to its last returned."""
    return {stage: wall for stage, (wall, _, _) in _stage_walls(rows).items()}


def build_report(db: Database, job_ids: list[str]) -> BenchReport:
    """Compute the benchmark figures for the given (finished) jobs from their timing rows."""
    return report_of(*load_runs(db, job_ids))


def report_of(jobs: dict[str, JobRow], by_job: dict[str, list[StageTimingRow]]) -> BenchReport:
    """The benchmark figures of loaded runs (see load_runs)."""
    done = [j for j in jobs.values() if j.status == "SUCCEEDED" and j.started_at and j.finished_at]
    # (started, finished) of each finished job: both set, by the filter above.
    span_of = {j.id: (float(j.started_at or 0.0), float(j.finished_at or 0.0)) for j in done}
    failed = [j.id for j in jobs.values() if j.status != "SUCCEEDED"]
    walls: dict[tuple[str, str], list[float]] = defaultdict(list)
    fps: dict[tuple[str, str], list[float]] = defaultdict(list)
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    overhead: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    for job in done:
        stage_walls = _stage_walls(by_job[job.id])
        for stage, (wall, frames, wait) in stage_walls.items():
            walls[(job.tier, stage)].append(wall)
            waits[(job.tier, stage)].append(wait)
            if frames and wall > 0:
                fps[(job.tier, stage)].append(frames / wall)
        run = span_of[job.id][1] - span_of[job.id][0]
        runs[job.tier].append(run)
        total = sum(w for w, _, _ in stage_walls.values())
        if total > 0:
            overhead[job.tier].append(run / total)
    order = {s.value: i for i, s in enumerate(StageName)}
    stages = [
        StageStats(
            tier,
            stage,
            len(v),
            float(np.percentile(v, 50)),
            float(np.percentile(v, 95)),
            float(np.mean(waits[(tier, stage)])),
            float(np.mean(fps[(tier, stage)])) if fps[(tier, stage)] else 0.0,
        )
        for (tier, stage), v in sorted(
            walls.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
        )
    ]
    tiers = []
    for tier in sorted(runs):
        tier_jobs = [j for j in done if j.tier == tier]
        span = max(span_of[j.id][1] for j in tier_jobs) - min(span_of[j.id][0] for j in tier_jobs)
        tiers.append(
            TierStats(
                tier,
                len(tier_jobs),
                60.0 * len(tier_jobs) / span if span > 0 else 0.0,
                float(np.percentile(runs[tier], 50)),
                float(np.mean(overhead[tier])) if overhead[tier] else 0.0,
                float(np.max(overhead[tier])) if overhead[tier] else 0.0,
            )
        )
    return BenchReport(stages, tiers, failed)


def format_report(report: BenchReport) -> str:
    """Render the report as aligned text tables."""
    lines = [
        f"{'tier':<6} {'stage':<11} {'jobs':>4} {'p50 s':>8} {'p95 s':>8} "
        f"{'replica wait s':>15} {'frames/s':>9}"
    ]
    for s in report.stages:
        lines.append(
            f"{s.tier:<6} {s.stage:<11} {s.jobs:>4} {s.p50:>8.2f} {s.p95:>8.2f} "
            f"{s.wait_mean:>15.2f} {s.frames_per_second:>9.1f}"
        )
    lines.append("")
    lines.append(
        f"{'tier':<6} {'jobs':>4} {'jobs/min':>9} {'run p50 s':>10} "
        f"{'overhead mean':>14} {'overhead max':>13}"
    )
    for t in report.tiers:
        lines.append(
            f"{t.tier:<6} {t.jobs:>4} {t.jobs_per_minute:>9.2f} {t.run_p50:>10.2f} "
            f"{t.overhead_mean:>14.3f} {t.overhead_max:>13.3f}"
        )
    lines.append(
        "stage wall = first call submitted → last call returned (parallel chunks once);"
        " replica wait = mean time a call queued for a busy replica"
    )
    lines.append("overhead = job run time (dispatch → published) / sum of its stages' wall times")
    if report.failed:
        lines.append(f"not succeeded: {', '.join(report.failed)}")
    return "\n".join(lines)
