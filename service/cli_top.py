"""`cameofarm top`: a live terminal view of the farm, on this machine or over the API."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from cameofarm.configs import StageName
from cameofarm.service.areas.base import ApiError, Forbidden, Unauthorized
from cameofarm.service.cli_common import Ctx, fail
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

# The order a job goes through them (render.py's steps 2 to 6).
PIPELINE = (
    StageName.VOICE,
    StageName.BASE_VIDEO,
    StageName.FACE_SWAP,
    StageName.LIP_SYNC,
    StageName.COMPOSITE,
)
BAR_WIDTH = 10


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 100:
        return f"{value:.1f} s"
    if value < 6000:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _header(view: dict[str, Any]) -> Text:
    at = datetime.fromtimestamp(view["at"]).strftime("%H:%M:%S")
    line = Text(f"cameofarm top  {at}  (rates over the last {_seconds(view['window_s'])})  ")
    scheduler = view.get("scheduler")
    if scheduler is None:
        line.append(f"scheduler: {view.get('scheduler_error')}", style="bold red")
    else:
        line.append(
            f"scheduler pid {scheduler['pid']}, {scheduler['ticks']} ticks, "
            f"{scheduler['tick_errors']} errors",
            style="red" if scheduler["tick_errors"] else "green",
        )
        if scheduler.get("metrics"):
            line.append(f"  metrics {scheduler['metrics']}", style="dim")
    return line


def _tiers(view: dict[str, Any]) -> Table:
    table = Table(title="tiers", title_justify="left")
    for name in ("tier", "queued", "running", "oldest wait / objective", "wait p50 / p95"):
        table.add_column(name, justify="left" if name == "tier" else "right")
    for name in ("done/min", "ended ok / failed / cancelled", "run p50"):
        table.add_column(name, justify="right")
    for t in view["tiers"]:
        late = t["oldest_wait_s"] > t["wait_objective_s"]
        p95 = t["wait_p95_s"]
        ended = t["finished"]
        table.add_row(
            t["tier"],
            str(t["queued"]),
            str(t["running"]),
            Text(
                f"{_seconds(t['oldest_wait_s'])} / {_seconds(t['wait_objective_s'])}",
                style="bold red" if late else "",
            ),
            Text(
                f"{_seconds(t['wait_p50_s'])} / {_seconds(p95)}",
                style="red" if p95 is not None and p95 > t["wait_objective_s"] else "",
            ),
            f"{t['succeeded_per_minute']:.2f}",
            f"{ended.get('SUCCEEDED', 0)} / {ended.get('FAILED', 0)} / {ended.get('CANCELLED', 0)}",
            _seconds(t["run_p50_s"]),
        )
    return table


def _busy(replica: dict[str, Any], before: dict[str, Any] | None, elapsed: float) -> str:
    """The share of the time since the last refresh that the replica spent in calls."""
    if before is None or elapsed <= 0 or "busy_seconds" not in replica:
        return "—"
    share = (replica["busy_seconds"] - before.get("busy_seconds", 0.0)) / elapsed
    return f"{max(0.0, min(1.0, share)):.0%}"


def _pools(view: dict[str, Any], previous: dict[str, Any] | None) -> Table:
    table = Table(title="pools", title_justify="left")
    for name in ("stage", "replica", "backend", "device", "state"):
        table.add_column(name)
    for name in ("calls", "in flight", "busy", "GPU"):
        table.add_column(name, justify="right")
    before = {p["replica"]: p for p in (previous or {}).get("pools", [])}
    elapsed = view["at"] - previous["at"] if previous else 0.0
    order = {s.value: i for i, s in enumerate(PIPELINE)}
    for p in sorted(view["pools"], key=lambda p: (order.get(p["stage"], 9), p["replica"])):
        if not p.get("reachable", True):
            state = Text("unreachable", style="bold red")
        elif not p.get("in_rotation", True):
            state = Text(f"drained {p.get('back_in_s', 0):.0f} s", style="yellow")
        elif p.get("total_failures"):
            state = Text(f"ok ({p['total_failures']} failures)", style="yellow")
        else:
            state = Text("ok", style="green")
        gpus = " ".join(
            f"{g['utilization']:.0%} {g['memory_used'] / 2**30:.1f}G" for g in p.get("gpus", ())
        )
        table.add_row(
            p["stage"],
            p["replica"],
            str(p.get("backend", "?")),
            str(p.get("device", "?")),
            state,
            str(p.get("calls", "?")),
            str(p.get("in_flight", "—")),
            _busy(p, before.get(p["replica"]), elapsed),
            gpus or "—",
        )
    return table


def _stage_cell(counts: list[int] | None) -> RenderableType:
    if counts is None:
        return Text("·", style="dim")
    done, total = counts
    cell = Table.grid(padding=(0, 1))
    cell.add_row(
        ProgressBar(total=max(total, 1), completed=done, width=BAR_WIDTH),
        Text(f"{done}/{total}", style="green" if done >= total else ""),
    )
    return cell


def _running(view: dict[str, Any]) -> Table:
    table = Table(title=f"running jobs ({len(view['running'])})", title_justify="left")
    for name in ("job", "tier", "try", "for", "now"):
        table.add_column(name)
    for stage in PIPELINE:
        table.add_column(stage.value)
    for job in view["running"]:
        stages = job.get("stages", {})
        table.add_row(
            job["id"],
            job["tier"],
            str(job["attempt"]),
            _seconds(job["running_s"]),
            f"{job['stage'] or 'starting'} {job['progress']:.0%}",
            *(_stage_cell(stages.get(stage.value)) for stage in PIPELINE),
        )
    return table


def render_view(view: dict[str, Any], previous: dict[str, Any] | None = None) -> Group:
    """One frame of `top`: header, tiers, pools and running jobs; `previous` (the frame
    before) gives each replica's busy share since then."""
    parts: list[RenderableType] = [_header(view), _tiers(view)]
    for tier, why in sorted(view.get("waiting", {}).items()):
        parts.append(Text(f"  {tier} waits: {why}", style="yellow"))
    if view["pools"]:
        parts.append(_pools(view, previous))
    parts.append(_running(view))
    return Group(*parts)


def watch(
    fetch: Callable[[], dict[str, Any]],
    console: Console,
    interval: float,
    frames: int | None = None,
) -> None:
    """Show the view every `interval` seconds (`frames` times, or until Ctrl-C): redrawn in
    place on a terminal, one frame after another otherwise (a log). A fetch that fails is
    shown and tried again at the next refresh; a refused key ends the watch."""
    previous: dict[str, Any] | None = None
    shown = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    with live if live is not None else contextlib.nullcontext():
        while frames is None or shown < frames:
            frame: RenderableType
            try:
                view = fetch()
            except (Unauthorized, Forbidden):
                raise
            except ApiError as exc:
                frame = Text(f"cannot read the farm: {exc}", style="bold red")
            else:
                frame, previous = render_view(view, previous), view
            if live is not None:
                live.update(frame, refresh=True)
            else:
                console.print(frame)
            shown += 1
            if frames is None or shown < frames:
                time.sleep(interval)


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(10, 86_400),
    default=300.0,
    show_default=True,
    help="Seconds over which throughput, waits and run times are measured.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and logs).")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
@click.pass_obj
def top(obj: Ctx, interval: float, window_s: float, once: bool, as_json: bool) -> None:
    """Watch the farm live: tiers, pools and replicas, running jobs with a bar per stage.

    \b
    tiers    queued and running jobs, the oldest wait against the tier's objective, queue
             waits (p50/p95), finished jobs per minute and run time over --window
    pools    each replica: backend, device, state (ok, drained, unreachable), calls, calls
             in flight, share of time busy since the last refresh, GPU use where NVML reads
    running  each job's attempt and time, and per stage the calls answered of its calls

    On this machine's farm, or over HTTP with --api-url. Needs an operator's API key
    (--api-key or CAMEOFARM_API_KEY). Ctrl-C stops it.
    """
    try:
        client = obj.client()
        if as_json:
            click.echo(json.dumps(client.farm_view(window_s), indent=2, default=str))
            return
        watch(lambda: client.farm_view(window_s), Console(), interval, 1 if once else None)
    except ApiError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
