"""Benchmark report: per tier and stage p50/p95 seconds, throughput, overhead ratio, and per
job its run time beside its critical path and the sum of its stage walls.

Chunks stream through the stages, so a job's stage walls overlap: their sum exceeds the run
time, by as much as the stages worked side by side. Three figures per job tell apart where
its time went:
- *critical path*: the longest chain of calls that had to follow one another (the voice,
  then the work before the chunks, the slowest chunk through all its stages, then the
  assembly), at the seconds each call took — what the job would take with a replica free
  for every call;
- *stage time*: the time in which at least one stage worked for the job (the union of its
  stage walls); run time over it is the *overhead ratio*: the share of the run spent
  outside the stages (planning, measuring, publishing) shows above 1;
- *streaming*: run time over the sum of the stage walls; under 1 when stages overlapped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

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
class JobStats:
    """One job's run time beside its critical path and stage walls (see the module's doc)."""

    job_id: str
    tier: str
    run: float
    critical_path: float
    stage_time: float
    stage_walls_sum: float
    first_call: float = 0.0  # from submitted to its first stage call starting
    queued: float = 0.0  # from submitted to dispatched: waiting for a slot of its tier

    @property
    def overhead(self) -> float:
        return self.run / self.stage_time if self.stage_time > 0 else 0.0

    @property
    def streaming(self) -> float:
        return self.run / self.stage_walls_sum if self.stage_walls_sum > 0 else 0.0


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
    jobs: list[JobStats] = field(default_factory=list)


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


_CHUNK_STAGES = (
    StageName.BASE_VIDEO.value,
    StageName.FACE_SWAP.value,
    StageName.LIP_SYNC.value,
    StageName.COMPOSITE.value,
)


def critical_path(rows: list[StageTimingRow]) -> float:
    """The longest chain of calls of one job that had to follow one another, at the seconds
    each took: its slowest voice line, the work before the chunks (chunk -1), the slowest
    chunk through every stage, and the composite calls after the chunks (the assembly)."""
    voice = [r.seconds for r in rows if r.stage == StageName.VOICE.value]
    framed = [r for r in rows if r.stage in _CHUNK_STAGES]
    chunks = {r.chunk for r in framed if r.stage == StageName.BASE_VIDEO.value and r.chunk >= 0}
    per_chunk: dict[int, float] = defaultdict(float)
    before = after = 0.0
    for r in framed:
        if r.chunk < 0:
            before += r.seconds
        elif r.chunk in chunks:
            per_chunk[r.chunk] += r.seconds
        else:  # a composite call after every chunk: the segments assembled
            after += r.seconds
    return max(voice, default=0.0) + before + max(per_chunk.values(), default=0.0) + after


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the spans."""
    covered, end = 0.0, float("-inf")
    for start, finish in sorted(spans):
        if finish <= end:
            continue
        covered += finish - max(start, end)
        end = finish
    return covered


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
    job_stats = []
    for job in done:
        rows = by_job[job.id]
        stage_walls = _stage_walls(rows)
        for stage, (wall, frames, wait) in stage_walls.items():
            walls[(job.tier, stage)].append(wall)
            waits[(job.tier, stage)].append(wait)
            if frames and wall > 0:
                fps[(job.tier, stage)].append(frames / wall)
        run = span_of[job.id][1] - span_of[job.id][0]
        runs[job.tier].append(run)
        spans: dict[str, tuple[float, float]] = {}
        for r in rows:
            first, last = spans.get(r.stage, (r.submitted_at, r.finished_at))
            spans[r.stage] = (min(first, r.submitted_at), max(last, r.finished_at))
        submitted = getattr(job, "submitted_at", None) or span_of[job.id][0]
        stats = JobStats(
            job.id,
            job.tier,
            run,
            critical_path(rows),
            _union(list(spans.values())),
            sum(w for w, _, _ in stage_walls.values()),
            min((r.started_at for r in rows), default=submitted) - submitted,
            span_of[job.id][0] - submitted,
        )
        job_stats.append(stats)
        if stats.stage_time > 0:
            overhead[job.tier].append(stats.overhead)
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
    return BenchReport(stages, tiers, failed, job_stats)


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
    lines.append("")
    lines.append(
        f"{'job':<17} {'tier':<6} {'queued s':>8} {'first call s':>12} {'run s':>7} "
        f"{'critical path s':>16} "
        f"{'stage time s':>13} {'sum of stage walls s':>21} {'streaming':>10}"
    )
    for j in sorted(report.jobs, key=lambda j: (j.tier, j.job_id)):
        lines.append(
            f"{j.job_id:<17} {j.tier:<6} {j.queued:>8.2f} {j.first_call:>12.2f} {j.run:>7.2f} "
            f"{j.critical_path:>16.2f} {j.stage_time:>13.2f} {j.stage_walls_sum:>21.2f} "
            f"{j.streaming:>10.3f}"
        )
    lines.append(
        "stage wall = first call submitted → last call returned (parallel chunks once);"
        " replica wait = mean time a call queued for a busy replica"
    )
    lines.append(
        "critical path = slowest voice line + work before the chunks + slowest chunk through "
        "every stage + assembly, at each call's own seconds; first call = submitted → its "
        "first stage call started (queue wait included); queued = submitted → dispatched (waiting "
        "for a slot of its tier)"
    )
    lines.append(
        "overhead = job run time (dispatch → published) / stage time (the time any of its "
        "stages worked); streaming = run time / sum of its stages' walls (under 1: stages "
        "overlapped)"
    )
    if report.failed:
        lines.append(f"not succeeded: {', '.join(report.failed)}")
    return "\n".join(lines)
