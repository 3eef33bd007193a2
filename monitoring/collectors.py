"""Metrics computed when Prometheus scrapes the scheduler: what the database holds (jobs by
tier, status and organisation, queues, consent cancellations, takedowns, purges, webhook
deliveries, the audit chain's last verification) and what the replicas' health reports said
(restarts, model loads, GPU readings).

Job counts are read from the database, not counted in one process: jobs are submitted by the
API, the CLI and batch tools, and cancelled by owners, so only the database sees them all, and
the counts survive a scheduler restart. The queries use the jobs table's indexes; a scrape
costs a few milliseconds at 100,000 jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cameofarm.configs import FarmConfig
from cameofarm.storage.db import (
    Database,
    JobEventRow,
    JobRow,
    PurgeRow,
    UserRow,
    WebhookDeliveryRow,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

log = logging.getLogger("cameofarm.metrics")

_DAY = 86_400.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
NO_ORGANISATION = "none"  # jobs submitted under a name that is no user (local CLI, tests)

# Where a consent cancellation was decided; the job event's reason starts with the phrase.
CONSENT_CAUSES = {
    "withdrawn": "consent withdrawn",  # the owner narrowed a permission, revoked or deleted
    "dispatch": "consent check at dispatch",  # no longer allowed when its turn came
    "publish": "consent check at publish",  # no longer allowed when its output was ready
}
WEBHOOK_STATUSES = ("PENDING", "DELIVERED", "FAILED")


class Sources(Collector):
    """The scheduler's scrape-time collectors, registered once per process; `use` swaps in
    those of the scheduler now running (a process may build several, as tests do)."""

    def __init__(self) -> None:
        self._sources: list[Collector] = []

    def use(self, sources: Sequence[Collector]) -> None:
        self._sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in list(self._sources):
            yield from source.collect()


FARM_SOURCES = Sources()
REGISTRY.register(FARM_SOURCES)


@dataclass(frozen=True)
class AuditCheck:
    """The last verification of the audit chain."""

    valid: bool
    at: float
    rows: int


class FarmStateCollector(Collector):
    """The farm's state as the database holds it, read at each scrape."""

    def __init__(
        self,
        db: Database,
        config: FarmConfig,
        audit: Callable[[], AuditCheck | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "cameofarm_farm_state_up", "1 when the scheduler could read the farm's database"
        )
        try:
            metrics = self._read()
        except Exception as exc:  # a database outage must not fail the whole scrape
            log.warning("farm state metrics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self) -> list[Metric]:
        now = self.clock()
        tiers = list(self.config.tiers)
        submitted = CounterMetricFamily(
            "cameofarm_jobs_submitted",
            "Jobs accepted into a queue, by tier and organisation",
            labels=["tier", "organisation"],
        )
        started = CounterMetricFamily(
            "cameofarm_jobs_started",
            "Dispatches of jobs (a job tried again counts each time), by tier and organisation",
            labels=["tier", "organisation"],
        )
        finished = CounterMetricFamily(
            "cameofarm_jobs_finished",
            "Jobs that ended, by tier, final status and organisation",
            labels=["tier", "status", "organisation"],
        )
        depth = GaugeMetricFamily("cameofarm_queue_depth", "Jobs queued per tier", labels=["tier"])
        running = GaugeMetricFamily(
            "cameofarm_running_jobs", "Jobs running per tier", labels=["tier"]
        )
        oldest = GaugeMetricFamily(
            "cameofarm_queue_oldest_wait_seconds",
            "How long the oldest queued job of a tier has waited since it was submitted "
            "(0 when the queue is empty)",
            labels=["tier"],
        )
        objective = GaugeMetricFamily(
            "cameofarm_tier_wait_objective_seconds",
            "The queue wait a tier promises at the 95th percentile "
            "(tiers.*.wait_objective_seconds)",
            labels=["tier"],
        )
        with self.db.session() as s:
            org = func.coalesce(UserRow.org_id, NO_ORGANISATION)
            rows = s.execute(
                select(JobRow.tier, org, JobRow.status, func.count(), func.sum(JobRow.attempts))
                .outerjoin(UserRow, UserRow.id == JobRow.customer)
                .group_by(JobRow.tier, org, JobRow.status)
            ).all()
            waiting = dict(
                s.execute(
                    select(JobRow.tier, func.min(JobRow.submitted_at))
                    .where(JobRow.status == "QUEUED")
                    .group_by(JobRow.tier)
                ).all()
            )
            extra = self._read_consent_and_housekeeping(s, now)
        sub: dict[tuple[str, str], int] = {}
        sta: dict[tuple[str, str], int] = {}
        depth_of: dict[str, int] = dict.fromkeys(tiers, 0)
        running_of: dict[str, int] = dict.fromkeys(tiers, 0)
        for tier, organisation, status, count, attempts in rows:
            key = (tier, organisation)
            sub[key] = sub.get(key, 0) + count
            sta[key] = sta.get(key, 0) + int(attempts or 0)
            if status in TERMINAL:
                finished.add_metric([tier, status, organisation], count)
            elif status == "QUEUED":
                depth_of[tier] = depth_of.get(tier, 0) + count
            elif status == "RUNNING":
                running_of[tier] = running_of.get(tier, 0) + count
        for (tier, organisation), count in sorted(sub.items()):
            submitted.add_metric([tier, organisation], count)
            started.add_metric([tier, organisation], sta[(tier, organisation)])
        for tier in sorted(depth_of):
            depth.add_metric([tier], depth_of[tier])
            running.add_metric([tier], running_of.get(tier, 0))
            first = waiting.get(tier)
            oldest.add_metric([tier], max(0.0, now - first) if first is not None else 0.0)
        for name in tiers:
            objective.add_metric([name], self.config.tiers[name].wait_objective_seconds)
        return [submitted, started, finished, depth, running, oldest, objective, *extra]

    def _read_consent_and_housekeeping(self, s: Any, now: float) -> list[Metric]:
        consent = CounterMetricFamily(
            "cameofarm_consent_cancellations",
            "Jobs cancelled because their cameos' consent no longer held, by where that was "
            "found (withdrawn: the owner narrowed it; dispatch / publish: the check there)",
            labels=["cause"],
        )
        for cause, phrase in CONSENT_CAUSES.items():  # counted in SQL, not read row by row
            count = s.scalar(
                select(func.count()).where(
                    JobEventRow.to_status == "CANCELLED", JobEventRow.reason.like(f"{phrase}%")
                )
            )
            consent.add_metric([cause], count or 0)
        takedowns = CounterMetricFamily(
            "cameofarm_takedowns",
            "Published videos taken down (by their cameo's owner or an operator)",
        )
        taken = s.scalar(select(func.count()).where(JobRow.taken_down_at.is_not(None)))
        takedowns.add_metric([], taken or 0)

        backlog, first_deadline, first_request = s.execute(
            select(
                func.count(), func.min(PurgeRow.deadline), func.min(PurgeRow.requested_at)
            ).where(PurgeRow.finished_at.is_(None))
        ).one()
        purge_backlog = GaugeMetricFamily(
            "cameofarm_purge_backlog", "Deleted cameos whose stored objects are not purged yet"
        )
        purge_backlog.add_metric([], backlog or 0)
        window = self.config.consent.purge_days * _DAY
        headroom = GaugeMetricFamily(
            "cameofarm_purge_deadline_headroom_seconds",
            "Seconds until the nearest deadline of an unfinished purge; with none unfinished, "
            "the whole window a deletion gets (consent.purge_days)",
        )
        headroom.add_metric([], (first_deadline - now) if first_deadline is not None else window)
        pending_age = GaugeMetricFamily(
            "cameofarm_purge_oldest_pending_seconds",
            "Age of the oldest unfinished purge request (0 when none is pending)",
        )
        pending_age.add_metric([], max(0.0, now - first_request) if first_request else 0.0)

        hooks = GaugeMetricFamily(
            "cameofarm_webhook_deliveries",
            "Webhook deliveries by state (PENDING: due or backing off)",
            labels=["status"],
        )
        by_status = dict(
            s.execute(
                select(WebhookDeliveryRow.status, func.count()).group_by(WebhookDeliveryRow.status)
            ).all()
        )
        for status in WEBHOOK_STATUSES:
            hooks.add_metric([status], by_status.get(status, 0))
        out = [consent, takedowns, purge_backlog, headroom, pending_age, hooks]
        check = self.audit()
        if check is not None:  # absent until the scheduler has verified the chain once
            valid = GaugeMetricFamily(
                "cameofarm_audit_chain_valid",
                "1 when the audit chain verified at its last check, 0 when it did not",
            )
            valid.add_metric([], 1 if check.valid else 0)
            checked = GaugeMetricFamily(
                "cameofarm_audit_chain_verified_timestamp_seconds",
                "When the audit chain was last verified (Unix time)",
            )
            checked.add_metric([], check.at)
            out += [valid, checked]
        return out


@dataclass
class _ReplicaState:
    stage: str
    replica: str
    pid: int | None = None
    loads: int = 0
    restarts: int = 0
    report: dict[str, Any] = field(default_factory=dict)


class ReplicaWatch(Collector):
    """What the replicas' health reports said, kept between polls: whether each answered and
    is in rotation, how often its process was new (a model load; after the first, a restart),
    and the GPU readings it took (NVML, only where a GPU is present).

    A restart is seen as a new process id at the next poll: several restarts between two
    polls count as one."""

    def __init__(self) -> None:
        self._replicas: dict[tuple[str, str], _ReplicaState] = {}
        self._gpus: dict[tuple[str, str], dict[str, Any]] = {}
        self.polled_at: float | None = None

    def observe(self, reports: Sequence[dict[str, Any]], now: float | None = None) -> None:
        """Take one round of `StagePools.health()` reports."""
        gpus: dict[tuple[str, str], dict[str, Any]] = {}
        for report in reports:
            key = (str(report.get("stage", "")), str(report.get("replica", "")))
            state = self._replicas.setdefault(key, _ReplicaState(*key))
            pid = report.get("pid") if report.get("reachable") else None
            if pid is not None and pid != state.pid:
                state.loads += 1
                if state.pid is not None:
                    state.restarts += 1
            if pid is not None:
                state.pid = pid
            state.report = dict(report)
            for reading in report.get("gpus") or ():
                gpus[(str(reading["node"]), str(reading["uuid"]))] = reading
        self._gpus = gpus
        self.polled_at = time.time() if now is None else now

    def collect(self) -> Iterator[Metric]:
        labels = ["stage", "replica"]
        up = GaugeMetricFamily(
            "cameofarm_replica_up",
            "1 when the replica answered its last health check",
            labels=[*labels, "backend", "device", "provider"],
        )
        rotation = GaugeMetricFamily(
            "cameofarm_replica_in_rotation",
            "1 when the replica takes calls, 0 while it is drained after repeated failures",
            labels=labels,
        )
        loads = CounterMetricFamily(
            "cameofarm_model_loads",
            "Times a replica's process loaded its backend's models (its start and each restart)",
            labels=[*labels, "backend", "models"],
        )
        restarts = CounterMetricFamily(
            "cameofarm_replica_restarts",
            "Times a replica came back in a new process (crashed, killed when hung, or lost)",
            labels=labels,
        )
        load_seconds = GaugeMetricFamily(
            "cameofarm_model_load_seconds",
            "How long the replica's current process took to load its models",
            labels=labels,
        )
        for (stage, replica), state in sorted(self._replicas.items()):
            r = state.report
            backend = str(r.get("backend", ""))
            up.add_metric(
                [stage, replica, backend, str(r.get("device", "")), str(r.get("provider", ""))],
                1 if r.get("reachable") else 0,
            )
            rotation.add_metric([stage, replica], 1 if r.get("in_rotation", True) else 0)
            models = ",".join(f"{k}={v}" for k, v in sorted((r.get("models") or {}).items()))
            loads.add_metric([stage, replica, backend, models], state.loads)
            restarts.add_metric([stage, replica], state.restarts)
            if "load_seconds" in r:
                load_seconds.add_metric([stage, replica], float(r["load_seconds"]))
        yield from (up, rotation, loads, restarts, load_seconds)
        if not self._gpus:
            return  # no GPU was read (none present, or no NVML): no GPU series at all
        gpu_labels = ["node", "gpu", "uuid", "name"]
        util = GaugeMetricFamily(
            "cameofarm_gpu_utilization_ratio",
            "Share of the last sample period a GPU's kernels ran (NVML)",
            labels=gpu_labels,
        )
        used = GaugeMetricFamily(
            "cameofarm_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=gpu_labels
        )
        total = GaugeMetricFamily(
            "cameofarm_gpu_memory_total_bytes", "GPU memory installed (NVML)", labels=gpu_labels
        )
        for (node, uuid), g in sorted(self._gpus.items()):
            values = [node, str(g["index"]), uuid, str(g.get("name", ""))]
            util.add_metric(values, float(g["utilization"]))
            used.add_metric(values, float(g["memory_used"]))
            total.add_metric(values, float(g["memory_total"]))
        yield from (util, used, total)
