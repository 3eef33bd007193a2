"""`cameofarm bench --report DIR`: a benchmark's figures as an HTML page with SVG plots — stage
time distributions per tier, a timeline of stage calls per replica (where the barriers and idle
gaps are), throughput — and the same figures as JSON (report.json)."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from cameofarm.configs import StageName
from cameofarm.monitoring.bench import load_runs, report_of, stage_walls
from cameofarm.storage.db import Database, JobRow, StageTimingRow

# One colour per stage, in pipeline order (matplotlib's tab10).
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


class TimedCall(Protocol):
    """What the report needs of one stage call (a StageTimingRow)."""

    stage: str
    replica: str
    submitted_at: float
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class ReplicaUse:
    """How busy one replica was over the benchmark."""

    replica: str
    stage: str
    calls: int
    busy_seconds: float  # time it ran at least one call (overlapping calls count once)
    busy_ratio: float  # busy_seconds over the whole benchmark's span
    longest_idle: float  # longest gap between its calls (seconds)


def replica_use(calls: Sequence[TimedCall], start: float, end: float) -> list[ReplicaUse]:
    """Per replica: its calls, busy time (the union of its calls' run intervals), share of the
    span [start, end] it was busy, and the longest gap between two of its calls."""
    by_replica: dict[str, list[TimedCall]] = defaultdict(list)
    for call in calls:
        by_replica[call.replica].append(call)
    span = max(end - start, 1e-9)
    out = []
    for replica, mine in sorted(by_replica.items()):
        spans = sorted((c.started_at, c.finished_at) for c in mine)
        busy, longest = 0.0, 0.0
        run_start, run_end = spans[0]
        for begin, finish in spans[1:]:
            if begin > run_end:  # an idle gap, then a new busy run
                busy += run_end - run_start
                longest = max(longest, begin - run_end)
                run_start, run_end = begin, finish
            else:
                run_end = max(run_end, finish)
        busy += run_end - run_start
        out.append(ReplicaUse(replica, mine[0].stage, len(mine), busy, busy / span, longest))
    return out


# The order a job goes through the stages.
_PIPELINE = [
    StageName.VOICE,
    StageName.BASE_VIDEO,
    StageName.FACE_SWAP,
    StageName.LIP_SYNC,
    StageName.COMPOSITE,
]


def _stage_order(stage: str) -> int:
    order = [s.value for s in _PIPELINE]
    return order.index(stage) if stage in order else len(order)


def _colour(stage: str) -> str:
    return _COLOURS[_stage_order(stage) % len(_COLOURS)]


def _stage_times_plot(walls: dict[str, dict[str, list[float]]], path: Path) -> None:
    from matplotlib.figure import Figure

    tiers = sorted(walls)
    fig = Figure(figsize=(5.5 * max(1, len(tiers)), 4.0), layout="constrained")
    axes = fig.subplots(1, max(1, len(tiers)), squeeze=False)[0]
    for ax, tier in zip(axes, tiers, strict=False):
        stages = sorted(walls[tier], key=_stage_order)
        ax.boxplot([walls[tier][s] for s in stages], tick_labels=stages, vert=True)
        ax.set_title(f"{tier}: seconds per stage (one point per job)")
        ax.set_ylabel("stage wall time, s")
        ax.tick_params(axis="x", labelrotation=20)
    fig.savefig(path)


def _timeline_plot(calls: Sequence[TimedCall], start: float, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    stage_of = {c.replica: c.stage for c in calls}
    replicas = sorted(stage_of, key=lambda r: (_stage_order(stage_of[r]), r))
    fig = Figure(figsize=(11.0, 1.0 + 0.35 * len(replicas)), layout="constrained")
    ax = fig.subplots()
    for row, replica in enumerate(replicas):
        mine = [c for c in calls if c.replica == replica]
        waits = [(c.submitted_at - start, c.started_at - c.submitted_at) for c in mine]
        ax.broken_barh(waits, (row - 0.1, 0.2), facecolors="#cccccc")  # queued for the replica
        for c in mine:
            run = [(c.started_at - start, max(c.finished_at - c.started_at, 1e-3))]
            ax.broken_barh(run, (row - 0.35, 0.7), facecolors=_colour(c.stage))
    ax.set_yticks(range(len(replicas)), labels=replicas)
    ax.invert_yaxis()  # the pipeline's first stage on top
    ax.set_xlabel("seconds since the first call")
    ax.set_title("stage calls per replica (grey: waiting for the replica)")
    stages = sorted({c.stage for c in calls}, key=_stage_order)
    handles = [Patch(color=_colour(s), label=s) for s in stages]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path)


def _throughput_plot(finished: dict[str, list[float]], start: float, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.5), layout="constrained")
    ax = fig.subplots()
    for tier, times in sorted(finished.items()):
        xs = sorted(t - start for t in times)
        ax.step([0.0, *xs], range(len(xs) + 1), where="post", label=tier)
    ax.set_xlabel("seconds since the first call")
    ax.set_ylabel("jobs published")
    ax.set_title("throughput")
    ax.legend()
    fig.savefig(path)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_figures(
    jobs: dict[str, JobRow], by_job: dict[str, list[StageTimingRow]]
) -> dict[str, Any]:
    """Everything the report shows of loaded runs, as plain data (what report.json holds)."""
    report = report_of(jobs, by_job)
    calls = [r for rows in by_job.values() for r in rows]
    start = min((c.submitted_at for c in calls), default=0.0)
    end = max((c.finished_at for c in calls), default=0.0)
    return {
        "jobs": len(jobs),
        "span_seconds": end - start,
        "stages": [asdict(s) for s in report.stages],
        "tiers": [asdict(t) for t in report.tiers],
        "job_runs": [
            {**asdict(j), "overhead": j.overhead, "streaming": j.streaming} for j in report.jobs
        ],
        "replicas": [asdict(r) for r in replica_use(calls, start, end)],
        "failed": report.failed,
    }


def write_report(db: Database, job_ids: list[str], out_dir: str | Path) -> Path:
    """Write index.html, its plots (SVG) and report.json for these jobs into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs, by_job = load_runs(db, job_ids)
    figures = report_figures(jobs, by_job)
    calls = [r for rows in by_job.values() for r in rows]
    if not calls:
        raise ValueError("none of these jobs has stage timings: nothing to report")
    start = min(c.submitted_at for c in calls)
    walls: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    finished: dict[str, list[float]] = defaultdict(list)
    for job_id, rows in by_job.items():
        job = jobs[job_id]
        if job.status != "SUCCEEDED":
            continue
        for stage, wall in stage_walls(rows).items():
            walls[job.tier][stage].append(wall)
        finished[job.tier].append(float(job.finished_at or max(r.finished_at for r in rows)))
    _stage_times_plot(walls, out / "stage_times.svg")
    _timeline_plot(calls, start, out / "timeline.svg")
    _throughput_plot(finished, start, out / "throughput.svg")
    (out / "report.json").write_text(json.dumps(figures, indent=2))
    stage_keys = ["tier", "stage", "jobs", "p50", "p95", "wait_mean", "frames_per_second"]
    tier_keys = ["tier", "jobs", "jobs_per_minute", "run_p50", "overhead_mean", "overhead_max"]
    replica_keys = ["replica", "stage", "calls", "busy_seconds", "busy_ratio", "longest_idle"]
    stage_rows = [[s[k] for k in stage_keys] for s in figures["stages"]]
    tier_rows = [[t[k] for k in tier_keys] for t in figures["tiers"]]
    replica_rows = [[r[k] for k in replica_keys] for r in figures["replicas"]]
    failed = ", ".join(figures["failed"]) or "none"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cameofarm benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body>
<h1>cameofarm benchmark: {figures["jobs"]} jobs over {figures["span_seconds"]:.1f} s</h1>
<p>Not succeeded: {html.escape(failed)}. The same figures:
<a href="report.json">report.json</a>.</p>
<h2>Per tier</h2>
{_table(["tier", "jobs", "jobs/min", "run p50 s", "overhead mean", "overhead max"], tier_rows)}
<p>overhead = job run time (dispatch to published) / sum of its stages' wall times.</p>
<h2>Per tier and stage</h2>
{_table(["tier", "stage", "jobs", "p50 s", "p95 s", "replica wait s", "frames/s"], stage_rows)}
<img src="stage_times.svg" alt="stage time distributions per tier">
<h2>Replicas</h2>
{_table(["replica", "stage", "calls", "busy s", "busy ratio", "longest idle s"], replica_rows)}
<img src="timeline.svg" alt="timeline of stage calls per replica">
<h2>Throughput</h2>
<img src="throughput.svg" alt="jobs published over time per tier">
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index
