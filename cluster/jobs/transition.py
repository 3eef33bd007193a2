"""The one function that changes a job's status (history, audit and webhooks in the same
transaction: the job's, and its batch's when it was the batch's last open job)."""

from __future__ import annotations

import json
import time

from cameofarm.cameos import audit
from cameofarm.cluster.jobs.model import TERMINAL, JobError, JobStatus
from cameofarm.storage.db import (
    BatchItemRow,
    BatchRow,
    JobEventRow,
    JobRow,
    UserRow,
    WebhookDeliveryRow,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

ALLOWED_MOVES: dict[JobStatus | None, set[JobStatus]] = {
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


def transition_job(
    session: Session,
    row: JobRow,
    to: JobStatus,
    reason: str = "",
    now: float | None = None,
    actor: str = "scheduler",
) -> None:
    """Change a job's status, stamping times and writing a job_events row; refuse illegal moves."""
    current = JobStatus(row.status) if row.status else None
    if to not in ALLOWED_MOVES[current]:
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
    audit.record(
        session,
        actor,
        f"job.{to.value.lower()}",
        row.id,
        now=at,
        customer=row.customer,
        cameo_ids=list(row.cameo_ids),
        reason=reason,
    )
    if to in TERMINAL:
        _queue_webhook(
            session,
            row.customer,
            row.id,
            {
                "event": f"job.{row.status.lower()}",
                "job_id": row.id,
                "status": row.status,
                "tier": row.tier,
                "cameo_ids": list(row.cameo_ids),
                "error": row.error,
                "finished_at": row.finished_at,
            },
            at,
        )
        _complete_batch(session, row, at)


def _complete_batch(session: Session, row: JobRow, at: float) -> None:
    """Mark the job's batch completed when no job of it is left to run, and tell its
    customer (batch.completed). The batch row is locked first: of two last jobs ending at
    once, the second to commit sees the first one ended."""
    batch_id = session.scalar(select(BatchItemRow.batch_id).where(BatchItemRow.job_id == row.id))
    if batch_id is None:
        return
    batch = session.get(BatchRow, batch_id, with_for_update=True)
    if batch is None or batch.completed_at is not None:
        return
    counts = dict(
        session.execute(
            select(JobRow.status, func.count())
            .join(BatchItemRow, BatchItemRow.job_id == JobRow.id)
            .where(BatchItemRow.batch_id == batch_id)
            .group_by(JobRow.status)
        ).all()
    )
    if counts.get(JobStatus.QUEUED.value) or counts.get(JobStatus.RUNNING.value):
        return
    batch.completed_at = at
    body = {
        "event": "batch.completed",
        "batch_id": batch_id,
        "status": "completed",
        "name": batch.name,
        "counts": {s.value: int(counts.get(s.value, 0)) for s in TERMINAL},
        "finished_at": at,
    }
    _queue_webhook(session, batch.customer, batch_id, body, at)


def _queue_webhook(
    session: Session, customer: str, about: str, event: dict[str, object], at: float
) -> None:
    user = session.get(UserRow, customer)
    if user is None or not user.webhook_url:
        return
    session.add(
        WebhookDeliveryRow(
            user_id=user.id,
            job_id=about,
            url=user.webhook_url,
            body=json.dumps(event, sort_keys=True),
            status="PENDING",
            attempts=0,
            next_at=at,
            created_at=at,
        )
    )
