"""The one function that changes a job's status (history, audit and webhook in the same
transaction)."""

from __future__ import annotations

import json
import time

from cameofarm.cameos import audit
from cameofarm.cluster.jobs.model import TERMINAL, JobError, JobStatus
from cameofarm.storage.db import JobEventRow, JobRow, UserRow, WebhookDeliveryRow
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
        _queue_webhook(session, row, at)


def _queue_webhook(session: Session, row: JobRow, at: float) -> None:
    user = session.get(UserRow, row.customer)
    if user is None or not user.webhook_url:
        return
    body = json.dumps(
        {
            "event": f"job.{row.status.lower()}",
            "job_id": row.id,
            "status": row.status,
            "tier": row.tier,
            "cameo_ids": list(row.cameo_ids),
            "error": row.error,
            "finished_at": row.finished_at,
        },
        sort_keys=True,
    )
    session.add(
        WebhookDeliveryRow(
            user_id=user.id,
            job_id=row.id,
            url=user.webhook_url,
            body=body,
            status="PENDING",
            attempts=0,
            next_at=at,
            created_at=at,
        )
    )
