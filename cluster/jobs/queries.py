"""Reading jobs: one job and its history (as its viewer may see them), lists, the queue heads
the dispatch policy needs, and the lookups of the chores and consent cascades."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cameofarm.cameos.permissions import cameos_of
from cameofarm.cluster.jobs.model import JobStatus, JobView, UnknownJobError
from cameofarm.cluster.policy import QueuedJob, QueueIndex, share_of
from cameofarm.storage.db import Database, JobEventRow, JobRow, UserRow
from sqlalchemy import CompoundSelect, Select, func, select, union_all
from sqlalchemy.orm import Session


def get_job(db: Database, job_id: str, viewer: str | None = None) -> JobView:
    """Return the job or raise UnknownJobError (also when `viewer` is neither its customer
    nor the owner of a cameo in it: another user's job id answers as unknown)."""
    with db.session() as s:
        row = s.get(JobRow, job_id)
        if row is None or (viewer is not None and not _may_see(s, viewer, row)):
            raise UnknownJobError(
                f"no job with id {job_id[:40]!r}; list jobs with `cameofarm jobs`"
            )
        return JobView.from_row(row)


def job_history(db: Database, job_id: str, viewer: str | None = None) -> list[dict[str, object]]:
    """Every recorded step of a job, oldest first: status changes, and chunks that were tried
    again on another replica, each with its reason. Same visibility as get_job."""
    get_job(db, job_id, viewer)
    with db.session() as s:
        rows = s.scalars(
            select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
        )
        return [
            {"at": r.at, "from": r.from_status, "to": r.to_status, "reason": r.reason} for r in rows
        ]


def _may_see(session: Session, viewer: str, row: JobRow) -> bool:
    if row.customer == viewer:
        return True
    owned = set(cameos_of(session, viewer))
    return bool(owned & set(row.cameo_ids))


def list_jobs(
    db: Database,
    statuses: set[JobStatus] | None = None,
    limit: int = 1000,
    customer: str | None = None,
) -> list[JobView]:
    """Return jobs (optionally of some statuses, or one customer's newest `limit`) in
    submission order."""
    with db.session() as s:
        query = select(JobRow)
        if statuses:
            query = query.where(JobRow.status.in_([st.value for st in statuses]))
        if customer is None:
            rows = list(s.scalars(query.order_by(JobRow.submitted_at).limit(limit)))
        else:
            newest = query.where(JobRow.customer == customer).order_by(JobRow.submitted_at.desc())
            rows = list(reversed(list(s.scalars(newest.limit(limit)))))
        return [JobView.from_row(r) for r in rows]


def describe_running(
    db: Database, now: float, stages: dict[str, dict[str, list[int]]] | None = None
) -> list[dict[str, Any]]:
    """The running jobs as status reports show them; `stages` adds each job's per-stage
    [calls answered, calls], which only the scheduler knows."""
    return [
        {
            "id": j.id,
            "tier": j.tier,
            "stage": j.stage,
            "progress": round(j.progress, 3),
            "attempt": j.attempts,
            "running_s": round(now - (j.started_at or now), 1),
            "stages": (stages or {}).get(j.id, {}),
        }
        for j in list_jobs(db, {JobStatus.RUNNING})
    ]


@dataclass(frozen=True)
class QueueSnapshot:
    """What the scheduler reads of the queues each tick."""

    depth: dict[str, int]  # tier → queued jobs
    heads: QueueIndex  # the first jobs of every (tier, customer), each line in order


def read_queues(db: Database, per_customer: int) -> QueueSnapshot:
    """Count the queues and read the first `per_customer` jobs of every (tier, customer) by
    priority then age: all the dispatch policy needs, however deep the queues are.

    One indexed GROUP BY, then the heads of all (tier, customer) pairs in one compound query
    of short indexed LIMIT scans; past a few hundred pairs, one window-function pass over the
    queue is cheaper.
    """
    queued = JobRow.status == JobStatus.QUEUED.value
    order = (JobRow.priority.desc(), JobRow.submitted_at, JobRow.id)
    columns = (JobRow.id, JobRow.tier, JobRow.submitted_at, JobRow.priority, JobRow.customer)
    depth: dict[str, int] = {}
    with db.session() as s:
        pairs = s.execute(
            select(JobRow.tier, JobRow.customer, func.count())
            .where(queued)
            .group_by(JobRow.tier, JobRow.customer)
        ).all()
        for tier, _customer, n in pairs:
            depth[tier] = depth.get(tier, 0) + int(n)
        if per_customer <= 0 or not pairs:
            return QueueSnapshot(depth, QueueIndex({}))
        if len(pairs) <= _COMPOUND_LIMIT:
            scans = [
                select(*columns)
                .where(queued, JobRow.tier == tier, JobRow.customer == customer)
                .order_by(*order)
                .limit(per_customer)
                .subquery()
                for tier, customer, _n in pairs
            ]
            query: Select[Any] | CompoundSelect[Any] = union_all(
                *(select(*scan.c) for scan in scans)
            )
        else:
            rank = func.row_number().over(
                partition_by=(JobRow.tier, JobRow.customer), order_by=order
            )
            ranked = select(*columns, rank.label("rank")).where(queued).subquery()
            query = select(*(ranked.c[c.key] for c in columns)).where(ranked.c.rank <= per_customer)
        # Each line comes out whole and in order: the index needs no sorting of its own.
        c = query.selected_columns
        query = query.order_by(c.tier, c.customer, c.priority.desc(), c.submitted_at, c.id)
        rows = s.execute(query).all()
        orgs = _orgs(s, {row[4] for row in rows})
    lines: dict[tuple[str, str], list[QueuedJob]] = {}
    for job_id, tier, at, priority, customer in rows:
        job = QueuedJob(job_id, tier, at, priority, customer, orgs.get(customer, ""))
        lines.setdefault((tier, customer), []).append(job)
    return QueueSnapshot(depth, QueueIndex(lines))


def _orgs(s: Session, customers: set[str]) -> dict[str, str]:
    if not customers:
        return {}
    found = s.execute(select(UserRow.id, UserRow.org_id).where(UserRow.id.in_(customers)))
    return {user: org for user, org in found}


def last_dispatches(db: Database, since: float) -> dict[str, float]:
    """When each share (`policy.share_of`: an organisation, or a customer without one) last
    had a job dispatched, for dispatches at or after `since`."""
    with db.session() as s:
        rows = s.execute(
            select(JobRow.customer, func.max(JobRow.started_at))
            .where(JobRow.started_at >= since)
            .group_by(JobRow.customer)
        ).all()
        orgs = _orgs(s, {customer for customer, _ in rows})
    last: dict[str, float] = {}
    for customer, at in rows:
        if at is None:
            continue
        share = share_of(orgs.get(customer, ""), customer)
        last[share] = max(float(at), last.get(share, float(at)))
    return last


def orgs_of(db: Database, customers: set[str]) -> dict[str, str]:
    """Each customer's organisation (absent for a name that is no user's): whose share of
    the farm their jobs run under."""
    with db.session() as s:
        return _orgs(s, customers)


# SQLite allows 500 terms in one compound SELECT.
_COMPOUND_LIMIT = 400


def ended_unpublished_since(db: Database, since: float) -> list[str]:
    """Jobs that ran at least once and ended FAILED or CANCELLED at or after `since`: a crash
    between writing their output and marking them published may have left an object."""
    with db.session() as s:
        return list(
            s.scalars(
                select(JobRow.id).where(
                    JobRow.status.in_([JobStatus.FAILED.value, JobStatus.CANCELLED.value]),
                    JobRow.attempts > 0,
                    JobRow.finished_at >= since,
                )
            )
        )


def jobs_using(session: Session, cameo_ids: Sequence[str]) -> list[JobRow]:
    """Every job (any status) that casts any of these cameos, oldest first."""
    wanted = set(cameo_ids)
    rows = session.scalars(select(JobRow).order_by(JobRow.submitted_at))
    return [r for r in rows if wanted & set(r.cameo_ids)]


def jobs_submitted_since(db: Database, customer: str, since: float) -> list[float]:
    """Submission times of a customer's jobs after `since` (for the daily quota)."""
    with db.session() as s:
        query = select(JobRow.submitted_at).where(
            JobRow.customer == customer, JobRow.submitted_at > since
        )
        return sorted(s.scalars(query))
