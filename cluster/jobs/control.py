"""Moving jobs along: status changes by id, progress, cancel, a failed attempt, and the
re-queue after a restart. Each decides on the job as it is now, inside one transaction."""

from __future__ import annotations

from cameofarm.cluster.jobs.model import TERMINAL, JobError, JobStatus, JobView, UnknownJobError
from cameofarm.cluster.jobs.transition import transition_job
from cameofarm.storage.db import Database, JobRow
from sqlalchemy import Table, select
from sqlalchemy.orm import Session


def set_job_status(
    db: Database,
    job_id: str,
    to: JobStatus,
    reason: str = "",
    actor: str = "scheduler",
    **fields: object,
) -> JobView:
    """Transition a job by id (and set extra columns such as output_key) in one transaction.

    A concurrent writer is waited out (re-read, re-decided); raises JobError when the move is
    not allowed from the job's status as it is now.
    """

    def decide(s: Session) -> JobView:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise UnknownJobError(f"no job with id {job_id!r}")
        for name, value in fields.items():
            setattr(row, name, value)
        transition_job(s, row, to, reason, actor=actor)
        return JobView.from_row(row)

    return db.transact(decide)


def record_progress(db: Database, job_id: str, stage: str, fraction: float) -> None:
    """Store how far a running job is (shown by `cameofarm wait`).

    A plain UPDATE of two columns: it does not bump the version that guards status changes,
    so progress never makes a user's cancel or an owner's revocation lose a race.
    """
    jobs = JobRow.__table__
    assert isinstance(jobs, Table)
    with db.session() as s:
        s.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
            .values(stage=stage[:32], progress=float(fraction))
        )


def cancel_job(
    db: Database, job_id: str, reason: str = "cancelled by user", actor: str = "cli"
) -> JobView:
    """Cancel a queued or running job (a running one stops at its next stage boundary).

    Raises JobError (conflict) only when the job has really ended already.
    """

    def decide(s: Session) -> JobView:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise UnknownJobError(f"no job with id {job_id[:40]!r}")
        if JobStatus(row.status) in TERMINAL:
            raise JobError(f"job {job_id} already {row.status}", "conflict")
        transition_job(s, row, JobStatus.CANCELLED, reason, actor=actor)
        return JobView.from_row(row)

    return db.transact(decide)


def end_failed_attempt(
    db: Database, job_id: str, error: str, retryable: bool, max_attempts: int
) -> JobStatus | None:
    """A running job's attempt failed: queue it again (retryable, attempts left) or fail it.

    Decided on the job as it is now; a job cancelled meanwhile is left as it is (None).
    """

    def decide(s: Session) -> JobStatus | None:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or row.status != JobStatus.RUNNING.value:
            return None
        if retryable and (row.attempts or 0) < max_attempts:
            transition_job(s, row, JobStatus.QUEUED, f"retrying after: {error}")
            return JobStatus.QUEUED
        transition_job(s, row, JobStatus.FAILED, error)
        return JobStatus.FAILED

    return db.transact(decide)


def requeue_interrupted(db: Database, reason: str) -> list[str]:
    """Put every RUNNING job back in its queue (the farm restarted); return their ids."""
    moved = []
    with db.session() as s:
        for row in s.scalars(select(JobRow).where(JobRow.status == JobStatus.RUNNING.value)):
            transition_job(s, row, JobStatus.QUEUED, reason)
            moved.append(row.id)
    return moved


# --- consent at dispatch, at publish, and when it is withdrawn ------------------------------
