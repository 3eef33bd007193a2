"""`cameofarm bench status`: how fast the farm's status answers while a long job renders.

Health calls run on each replica's control thread, so they do not wait behind chunk calls
(they used to: `status` took 36-49 s during a Pro render). This bench shows it on the
running farm. It queues one job of the tier (Pro by default) and, while that job works
through its chunked stages, times the status report two ways: in this process, as a
dashboard polling the farm sees it, and as a fresh `cameofarm status` process, as a person
typing it sees it (Python start-up and the Ray connection included).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cameofarm.cameos import get_cameo
from cameofarm.cluster.jobs import TERMINAL, JobStatus, get_job
from cameofarm.configs import FarmConfig
from cameofarm.storage import FarmStorage

Echo = Callable[[str], None]
# Long enough to fill most of a Pro video (about 12-14 s of speech).
SCRIPT = (
    "Welcome to the quarterly safety briefing. Today we walk through the new badge rules, "
    "the fire exits on every floor, and who to call when something looks wrong."
)
CHUNKED = ("base_video", "face_swap", "lip_sync")


class StatusBenchError(RuntimeError):
    """The bench could not run (no farm, or the job ended before it was measured)."""


@dataclass
class StatusBench:
    job_id: str = ""
    in_process_s: list[float] = field(default_factory=list)
    cli_s: list[float] = field(default_factory=list)
    stages: Counter[str] = field(default_factory=Counter)  # the job's stage at each sample
    job_status: str = ""


def _cli_status(config_dir: str | None) -> float:
    beside = os.path.join(os.path.dirname(sys.executable), "cameofarm")  # this installation's
    exe = beside if os.path.exists(beside) else shutil.which("cameofarm") or "cameofarm"
    args = [exe] + (["--config", config_dir] if config_dir else []) + ["status"]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise StatusBenchError(f"`cameofarm status` failed: {done.stderr.strip()[-400:]}")
    return took


def run_status_bench(
    config: FarmConfig,
    storage: FarmStorage,
    cameo_id: str,
    tier: str,
    samples: int,
    config_dir: str | None,
    echo: Echo,
    limit_s: float = 1800.0,
) -> StatusBench:
    """Queue one job and time `samples` status reports of each kind while it renders."""
    from cameofarm.cluster.bootstrap import FarmError, farm_status
    from cameofarm.service.jobs_api import submit_render

    try:
        farm_status(config)
    except FarmError as exc:
        raise StatusBenchError(f"{exc} (the bench measures a running farm)") from None
    owner = get_cameo(storage.db, cameo_id).owner
    job = submit_render(config, storage, [cameo_id], SCRIPT, tier, owner)
    bench = StatusBench(job_id=job.id)
    echo(f"queued {tier} job {job.id}; timing status while it is in {'/'.join(CHUNKED)}")
    deadline = time.monotonic() + limit_s
    while len(bench.in_process_s) < samples or len(bench.cli_s) < samples:
        view = get_job(storage.db, job.id)
        if view.status in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise StatusBenchError(f"job {job.id} still {view.status.value} after {limit_s:.0f} s")
        if view.status is not JobStatus.RUNNING or view.stage not in CHUNKED:
            time.sleep(0.2)  # queued, voice or encode: not yet (or no longer) what we measure
            continue
        bench.stages[view.stage] += 1
        if len(bench.in_process_s) < samples:
            started = time.perf_counter()
            farm_status(config)
            bench.in_process_s.append(time.perf_counter() - started)
        if len(bench.cli_s) < samples:
            bench.cli_s.append(_cli_status(config_dir))
        echo(
            f"  {view.stage:<10} status in-process {bench.in_process_s[-1]:.3f} s, "
            f"cli {bench.cli_s[-1]:.2f} s"
        )
    bench.job_status = get_job(storage.db, job.id).status.value
    if not bench.in_process_s:
        raise StatusBenchError(
            f"job {job.id} ended {bench.job_status} before it reached a chunked stage; "
            "nothing was measured (use a longer tier)"
        )
    return bench


def _figures(values: list[float]) -> str:
    if not values:
        return "none"
    p50 = statistics.median(values)
    return f"n={len(values)} p50 {p50:.3f} s, max {max(values):.3f} s"


def report(bench: StatusBench, echo: Echo) -> None:
    echo(f"job {bench.job_id}: {bench.job_status or 'still running'}")
    echo("samples by stage: " + ", ".join(f"{s}={n}" for s, n in sorted(bench.stages.items())))
    echo(f"status in-process:        {_figures(bench.in_process_s)}")
    echo(f"`cameofarm status` (CLI): {_figures(bench.cli_s)}")
