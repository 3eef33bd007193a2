"""`cameofarm bench faults`: a bounded fault-injection drill on the local farm.

It keeps a few short jobs in flight and kill -9s, in turn, a stage replica in the middle of a
chunk, the scheduler actor, and the whole Ray node (after which it runs `up` again, as a user
would). Then it waits for every job to end and counts what a platform team cares about: jobs
lost (never ended), duplicate publishes (more than one SUCCEEDED transition or webhook
delivery for a job), orphan objects (an output with no published job behind it), failures
with their reasons, and how long the farm took to be whole again after each kill.

It is disruptive by design: run it on a test farm, never on one that serves users.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cameofarm.cameos import get_cameo
from cameofarm.cluster.jobs import TERMINAL, JobStatus, get_job
from cameofarm.configs import FarmConfig, StageName
from cameofarm.pipelines.render import output_key
from cameofarm.storage import FarmStorage

Echo = Callable[[str], None]
KINDS = ("stage", "scheduler", "node")
# Stages that work chunk by chunk: a kill there lands in the middle of a chunk call. Stage
# kills take them in turn.
CHUNKED = (StageName.BASE_VIDEO.value, StageName.FACE_SWAP.value, StageName.LIP_SYNC.value)


class DrillError(RuntimeError):
    """The drill could not go on (the farm did not come back in time, or is remote)."""


@dataclass(frozen=True)
class Injection:
    kind: str
    target: str  # the replica, "scheduler" or "node"
    in_flight: tuple[str, ...]  # jobs running or queued at the kill
    recovered_s: float  # until the killed part answered again (or `up` returned)
    resumed_s: float = 0.0  # until a job that was in flight at the kill ended


@dataclass
class FaultDrill:
    injections: list[Injection] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    ended: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "job: error"
    lost: list[str] = field(default_factory=list)
    duplicate_publishes: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicate_publishes or self.orphan_objects)


def _wait_for(what: str, done: Callable[[], Any], limit_s: float, poll_s: float = 0.5) -> Any:
    """Poll `done` until it returns something truthy; DrillError after `limit_s`."""
    deadline = time.monotonic() + limit_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = done()
            if value:
                return value
        except Exception as exc:  # the farm is still coming back
            last = exc
        time.sleep(poll_s)
    raise DrillError(f"gave up after {limit_s:.0f} s waiting for {what} (last error: {last})")


class _Drill:
    def __init__(
        self,
        config: FarmConfig,
        storage: FarmStorage,
        cameo_id: str,
        tier: str,
        in_flight: int,
        step_limit_s: float,
        echo: Echo,
    ) -> None:
        self.config, self.storage, self.cameo_id = config, storage, cameo_id
        self.tier, self.in_flight, self.limit = tier, in_flight, step_limit_s
        self.echo = echo
        self.report = FaultDrill()
        # The drill renders as the cameo's owner: the one caller its consent always allows.
        self.customer = get_cameo(storage.db, cameo_id).owner
        self.stage_kills = 0

    # --- jobs ------------------------------------------------------------------------------

    def active(self) -> list[str]:
        return [j for j in self.report.jobs if get_job(self.storage.db, j).status not in TERMINAL]

    def top_up(self) -> None:
        """Submit jobs until `in_flight` are queued or running."""
        from cameofarm.service.jobs_api import submit_render

        for _ in range(self.in_flight - len(self.active())):
            n = len(self.report.jobs)
            job = submit_render(
                self.config,
                self.storage,
                [self.cameo_id],
                f"Fault drill take {n}.",
                self.tier,
                self.customer,
            )
            self.report.jobs.append(job.id)

    def mid_chunk(self, stages: Sequence[str] = CHUNKED) -> str:
        """Wait until a drill job is working on one of `stages`; return that stage."""

        def running_stage() -> str | None:
            for job_id in self.active():
                job = get_job(self.storage.db, job_id)
                if job.status is JobStatus.RUNNING and job.stage in stages:
                    return job.stage
            self.top_up()  # jobs may have ended meanwhile
            return None

        return str(
            _wait_for(f"a job in the middle of {'/'.join(stages)}", running_stage, self.limit)
        )

    # --- injections ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        from cameofarm.cluster.bootstrap import farm_status

        return farm_status(self.config)

    def kill_stage(self, stage: str) -> str:
        replicas = [p for p in self.status()["pools"] if p["stage"] == stage and p.get("reachable")]
        if not replicas:
            raise DrillError(f"no reachable {stage} replica to kill")
        victim = max(replicas, key=lambda p: p["calls"])  # the busiest: most likely mid-chunk
        os.kill(int(victim["pid"]), signal.SIGKILL)

        def replaced() -> bool:
            for p in self.status()["pools"]:
                if p["replica"] == victim["replica"]:
                    return bool(p.get("reachable") and p["pid"] != victim["pid"])
            return False

        _wait_for(f"{victim['replica']} to be restarted", replaced, self.limit)
        return str(victim["replica"])

    def kill_scheduler(self) -> str:
        old = self.status()["pid"]
        os.kill(int(old), signal.SIGKILL)
        _wait_for("the scheduler to be restarted", lambda: self.status()["pid"] != old, self.limit)
        return "scheduler"

    def kill_node(self) -> str:
        import ray
        from cameofarm.cluster.bootstrap import farm_up
        from cameofarm.cluster.ray_head import stop_head

        # Leave the node first: a Ray driver whose node dies under it is ended with it.
        ray.shutdown()
        stop_head(self.config, grace=0)  # SIGKILL to every process of this farm's node
        self.echo("    node killed; starting the farm again (`cameofarm up`)")
        farm_up(self.config, progress=lambda _: None)
        return "node"

    def inject(self, kind: str) -> Injection:
        self.top_up()
        if kind == "stage":
            self.stage_kills += 1
            stage = self.mid_chunk([CHUNKED[(self.stage_kills - 1) % len(CHUNKED)]])
        else:
            stage = self.mid_chunk()
        in_flight = tuple(self.active())
        started = time.monotonic()
        if kind == "stage":
            target = self.kill_stage(stage)
        elif kind == "scheduler":
            target = self.kill_scheduler()
        else:
            target = self.kill_node()
        recovered = time.monotonic() - started
        # Let work flow again before the next kill: a job that was in flight ends.
        _wait_for(
            "a job that was in flight at the kill to end",
            lambda: any(get_job(self.storage.db, j).status in TERMINAL for j in in_flight),
            self.limit,
        )
        return Injection(kind, target, in_flight, recovered, time.monotonic() - started)

    # --- the tally -------------------------------------------------------------------------

    def settle(self, settle_s: float) -> None:
        deadline = time.monotonic() + settle_s
        while self.active() and time.monotonic() < deadline:
            time.sleep(1.0)
        report = self.report
        report.lost = self.active()
        for job_id in report.jobs:
            job = get_job(self.storage.db, job_id)
            if job.status in TERMINAL:
                report.ended[job.status.value] += 1
            if job.status is JobStatus.FAILED:
                report.failures.append(f"{job_id}: {job.error}")
        report.duplicate_publishes = self.duplicates()
        report.orphan_objects = self.orphans()

    def duplicates(self) -> list[str]:
        from cameofarm.storage.db import JobEventRow, WebhookDeliveryRow
        from sqlalchemy import func, select

        jobs = self.report.jobs
        with self.storage.db.session() as s:
            twice = s.execute(
                select(JobEventRow.job_id, func.count())
                .where(JobEventRow.job_id.in_(jobs), JobEventRow.to_status == "SUCCEEDED")
                .group_by(JobEventRow.job_id)
                .having(func.count() > 1)
            ).all()
            sent_twice = s.execute(
                select(WebhookDeliveryRow.job_id, WebhookDeliveryRow.body, func.count())
                .where(WebhookDeliveryRow.job_id.in_(jobs))
                .group_by(WebhookDeliveryRow.job_id, WebhookDeliveryRow.body)
                .having(func.count() > 1)
            ).all()
        return [f"{j}: {n} SUCCEEDED transitions" for j, n in twice] + [
            f"{j}: the same webhook queued {n} times" for j, _, n in sent_twice
        ]

    def orphans(self) -> list[str]:
        """Outputs of drill jobs that are not the published output of a SUCCEEDED job."""
        found = []
        for job_id in self.report.jobs:
            key = output_key(job_id)
            if not self.storage.objects.exists(key):
                continue
            job = get_job(self.storage.db, job_id)
            if job.status is not JobStatus.SUCCEEDED or job.output_key != key:
                found.append(f"{key} ({job.status.value})")
        return found


def run_fault_drill(
    config: FarmConfig,
    storage: FarmStorage,
    cameo_id: str,
    kills: int,
    kinds: Sequence[str] = KINDS,
    tier: str = "plus",
    in_flight: int = 2,
    step_limit_s: float = 600.0,
    settle_s: float = 1800.0,
    echo: Echo = print,
) -> FaultDrill:
    """Bring the farm up, inject `kills` faults (cycling through `kinds`), let every job end
    and return the tally. The farm is left running."""
    from cameofarm.cluster.bootstrap import farm_up

    if config.cluster.address is not None:
        raise DrillError(
            "the fault drill kills processes on this machine: run it on a local farm "
            "(cluster.address: null), not on the cluster at " + str(config.cluster.address)
        )
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise DrillError(f"fault kinds must be among {', '.join(KINDS)}; got {sorted(kinds)}")
    started = time.monotonic()
    farm_up(config, progress=lambda _: None)
    drill = _Drill(config, storage, cameo_id, tier, in_flight, step_limit_s, echo)
    for n, kind in zip(range(kills), itertools.cycle(kinds), strict=False):
        injection = drill.inject(kind)
        drill.report.injections.append(injection)
        echo(
            f"  kill {n + 1}/{kills}: {kind} ({injection.target}) with "
            f"{len(injection.in_flight)} job(s) in flight; whole again in "
            f"{injection.recovered_s:.1f} s, a job done {injection.resumed_s:.1f} s after the kill"
        )
    echo(f"waiting for all {len(drill.report.jobs)} jobs to end...")
    drill.settle(settle_s)
    drill.report.seconds = time.monotonic() - started
    return drill.report


def report(drill: FaultDrill, echo: Echo = print) -> None:
    """Print the drill's figures, one per line."""
    recovery = [i.recovered_s for i in drill.injections]
    kinds = Counter(i.kind for i in drill.injections)
    echo(f"drill: {drill.seconds:.0f} s")
    echo(
        f"injections: {len(drill.injections)} ("
        + ", ".join(f"{k} {n}" for k, n in kinds.items())
        + ")"
    )
    echo(f"jobs: {len(drill.jobs)}")
    echo(f"succeeded: {drill.ended.get('SUCCEEDED', 0)}")
    echo(f"failed: {drill.ended.get('FAILED', 0)}")
    for line in drill.failures[:20]:
        echo(f"  {line}")
    if drill.ended.get("CANCELLED"):
        echo(f"cancelled: {drill.ended['CANCELLED']}")
    echo(f"lost: {len(drill.lost)}" + (f" {drill.lost}" if drill.lost else ""))
    echo(f"duplicate publishes: {len(drill.duplicate_publishes)}")
    for line in drill.duplicate_publishes[:20]:
        echo(f"  {line}")
    echo(f"orphan objects: {len(drill.orphan_objects)}")
    for line in drill.orphan_objects[:20]:
        echo(f"  {line}")
    if recovery:
        resumed = [i.resumed_s for i in drill.injections]
        echo(
            f"recovery (killed part back): p50 {statistics.median(recovery):.1f} s, "
            f"max {max(recovery):.1f} s"
        )
        echo(
            f"until a job in flight ended: p50 {statistics.median(resumed):.1f} s, "
            f"max {max(resumed):.1f} s"
        )
    echo("result: " + ("ok" if drill.ok else "FAILED"))
