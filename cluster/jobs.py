"""Render jobs in the database: submit, look up, and the one function that changes status."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

from cameofarm.cameos import require_usable
from cameofarm.configs import FarmConfig
from cameofarm.models.reference.voice import clean_script
from cameofarm.storage.db import Database, JobEventRow, JobRow
from sqlalchemy import func, select
from sqlalchemy.orm import Session


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
_ALLOWED: dict[JobStatus | None, set[JobStatus]] = {
    None: {JobStatus.QUEUED},
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED},
    # RUNNING → QUEUED: the farm restarted or a replica died; the job runs again.
    JobStatus.RUNNING: {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.QUEUED,
    },
    JobStatus.SUCCEEDED: set(),
    JobStatus.FAILED: set(),
    JobStatus.CANCELLED: set(),
}
# Words per second of a brisk speaker: a cheap early refusal of scripts far over a tier's limit.
_MAX_WORDS_PER_SECOND = 4.0


class JobError(ValueError):
    """A job request was refused; the message says why."""


class UnknownJobError(LookupError):
    """No job has that id."""


@dataclass(frozen=True)
class JobView:
    """A job as the CLI and the scheduler see it."""

    id: str
    tier: str
    status: JobStatus
    customer: str
    priority: int
    cameo_ids: tuple[str, ...]
    script: str
    background_key: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    progress: float
    stage: str
    output_key: str | None
    error: str | None

    @classmethod
    def from_row(cls, r: JobRow) -> JobView:
        return cls(
            r.id,
            r.tier,
            JobStatus(r.status),
            r.customer,
            r.priority,
            tuple(r.cameo_ids),
            r.script,
            r.background_key,
            r.submitted_at,
            r.started_at,
            r.finished_at,
            r.attempts,
            r.progress,
            r.stage,
            r.output_key,
            r.error,
        )


def transition_job(
    session: Session, row: JobRow, to: JobStatus, reason: str = "", now: float | None = None
) -> None:
    """Change a job's status, stamping times and writing a job_events row; refuse illegal moves."""
    current = JobStatus(row.status) if row.status else None
    if to not in _ALLOWED[current]:
        raise JobError(f"job {row.id}: cannot go from {current} to {to}")
    at = time.time() if now is None else now
    if to is JobStatus.RUNNING:
        row.started_at = at
        row.attempts = (row.attempts or 0) + 1
        row.progress, row.stage, row.error = 0.0, "", None
    elif to is JobStatus.QUEUED and current is not None:
        row.started_at, row.progress, row.stage = None, 0.0, ""
    if to in TERMINAL:
        row.finished_at = at
        if to is not JobStatus.SUCCEEDED:
            row.error = reason or row.error
    row.status = to.value
    session.add(
        JobEventRow(
            job_id=row.id,
            from_status=current.value if current else None,
            to_status=to.value,
            reason=reason,
            at=at,
        )
    )


def submit_job(
    db: Database,
    config: FarmConfig,
    *,
    cameo_ids: list[str],
    script: str,
    tier: str,
    customer: str,
    priority: int = 0,
    background_key: str | None = None,
) -> JobView:
    """Validate a render request and store it QUEUED; raise JobError saying what was wrong."""
    try:
        tier_cfg = config.tier(tier)
    except KeyError as exc:
        raise JobError(str(exc.args[0])) from None
    try:
        script = clean_script(script)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    words = len(script.split())
    if words > tier_cfg.max_seconds * _MAX_WORDS_PER_SECOND:
        raise JobError(
            f"the script has {words} words; {tier} videos are at most "
            f"{tier_cfg.max_seconds:g} s — shorten it or choose a longer tier"
        )
    if not cameo_ids:
        raise JobError("name at least one cameo (--cameo ID)")
    if len(cameo_ids) > 1:
        raise JobError("the reference pipeline casts exactly one cameo per video")
    try:
        require_usable(db, cameo_ids, config.enrollment.verified_days)
    except (LookupError, PermissionError) as exc:
        raise JobError(str(exc)) from None
    with db.session() as s:
        depth = (
            s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.tier == tier, JobRow.status == JobStatus.QUEUED.value)
            )
            or 0
        )
        if depth >= tier_cfg.max_queued:
            raise JobError(f"the {tier} queue is full ({depth} jobs); try again later")
        row = JobRow(
            id="job_" + uuid.uuid4().hex[:12],
            tier=tier,
            status="",
            customer=customer,
            priority=priority,
            cameo_ids=list(cameo_ids),
            script=script,
            background_key=background_key,
            submitted_at=time.time(),
            attempts=0,
            progress=0.0,
            stage="",
        )
        s.add(row)
        s.flush()
        transition_job(s, row, JobStatus.QUEUED, "submitted", now=row.submitted_at)
        return JobView.from_row(row)


def get_job(db: Database, job_id: str) -> JobView:
    """Return the job or raise UnknownJobError."""
    with db.session() as s:
        row = s.get(JobRow, job_id)
        if row is None:
            raise UnknownJobError(f"no job with id {job_id!r}; list jobs with `cameofarm jobs`")
        return JobView.from_row(row)


def list_jobs(
    db: Database, statuses: set[JobStatus] | None = None, limit: int = 1000
) -> list[JobView]:
    """Return jobs (optionally of some statuses) in submission order."""
    with db.session() as s:
        query = select(JobRow).order_by(JobRow.submitted_at).limit(limit)
        if statuses:
            query = query.where(JobRow.status.in_([st.value for st in statuses]))
        return [JobView.from_row(r) for r in s.scalars(query)]


def set_job_status(
    db: Database, job_id: str, to: JobStatus, reason: str = "", **fields: object
) -> JobView:
    """Transition a job by id (and set extra columns such as output_key) in one transaction."""
    with db.session() as s:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise UnknownJobError(f"no job with id {job_id!r}")
        for name, value in fields.items():
            setattr(row, name, value)
        transition_job(s, row, to, reason)
        return JobView.from_row(row)


def record_progress(db: Database, job_id: str, stage: str, fraction: float) -> None:
    """Store how far a running job is (shown by `cameofarm wait`)."""
    with db.session() as s:
        row = s.get(JobRow, job_id)
        if row is not None and row.status == JobStatus.RUNNING.value:
            row.stage, row.progress = stage, fraction


def cancel_job(db: Database, job_id: str, reason: str = "cancelled by user") -> JobView:
    """Cancel a queued or running job (a running one stops at its next stage boundary)."""
    job = get_job(db, job_id)
    if job.status in TERMINAL:
        raise JobError(f"job {job_id} already {job.status.value}")
    return set_job_status(db, job_id, JobStatus.CANCELLED, reason)


def requeue_interrupted(db: Database, reason: str) -> list[str]:
    """Put every RUNNING job back in its queue (the farm restarted); return their ids."""
    moved = []
    with db.session() as s:
        for row in s.scalars(select(JobRow).where(JobRow.status == JobStatus.RUNNING.value)):
            transition_job(s, row, JobStatus.QUEUED, reason)
            moved.append(row.id)
    return moved
