"""Consent on a job's way through the farm: at dispatch, at publish, and when an owner
withdraws it. The rule itself is `cameos.permissions.may_cast`; this module applies it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cameofarm.cameos import UnknownCameoError
from cameofarm.cameos.content import ContentError, check_script
from cameofarm.cameos.permissions import ConsentError, may_cast
from cameofarm.cluster.jobs.model import JobChanged, JobStatus, JobView
from cameofarm.cluster.jobs.transition import transition_job
from cameofarm.configs import FarmConfig
from cameofarm.storage.db import Database, JobRow
from sqlalchemy import select
from sqlalchemy.orm import Session


def dispatch_job(db: Database, config: FarmConfig, job_id: str) -> JobView | None:
    """Move a queued job to RUNNING if its consent still holds; cancel it (None) if not.

    Returns None too when the job is no longer queued (e.g. it was cancelled meanwhile).
    """

    def decide(s: Session) -> JobView | None:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or row.status != JobStatus.QUEUED.value:
            return None
        try:
            check_script(row.script, config.content)
            may_cast(s, row.customer, row.cameo_ids, row.script, config)
        except (ConsentError, ContentError, UnknownCameoError) as exc:
            transition_job(s, row, JobStatus.CANCELLED, f"consent check at dispatch: {exc}")
            return None
        transition_job(s, row, JobStatus.RUNNING, "dispatched")
        return JobView.from_row(row)

    return db.transact(decide)


def finish_published(
    db: Database,
    config: FarmConfig,
    job_id: str,
    output_key: str,
    quality: dict[str, Any] | None = None,
) -> JobView:
    """Mark a rendered job SUCCEEDED with its output (and quality report), if it is still
    running and its consent still holds, in one transaction. Raise JobChanged if not (the
    caller unpublishes); a job whose consent lapsed is CANCELLED in that same transaction."""

    def decide(s: Session) -> JobView | str:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or row.status != JobStatus.RUNNING.value:
            return f"job {job_id} is no longer running; not published"
        try:
            may_cast(s, row.customer, row.cameo_ids, row.script, config)
        except (ConsentError, ContentError, UnknownCameoError) as exc:
            transition_job(s, row, JobStatus.CANCELLED, f"consent check at publish: {exc}")
            return f"job {job_id} not published: {exc}"
        row.output_key, row.progress, row.stage = output_key, 1.0, "published"
        row.quality = quality
        transition_job(s, row, JobStatus.SUCCEEDED, "published")
        return JobView.from_row(row)

    # The refusal is raised after the commit, so the cancellation it made is kept.
    outcome = db.transact(decide)
    if isinstance(outcome, str):
        raise JobChanged(outcome)
    return outcome


def cancel_unpermitted(
    session: Session, config: FarmConfig, cameo_ids: Sequence[str], actor: str
) -> list[str]:
    """Cancel every queued or running job using these cameos that is no longer allowed.

    Call inside the transaction that narrowed the permission, after the change is flushed.
    """
    cancelled = []
    wanted = set(cameo_ids)
    active = select(JobRow).where(
        JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])
    )
    for row in list(session.scalars(active)):
        if not wanted & set(row.cameo_ids):
            continue
        try:
            may_cast(session, row.customer, row.cameo_ids, row.script, config)
        except (ConsentError, ContentError, UnknownCameoError) as exc:
            transition_job(
                session, row, JobStatus.CANCELLED, f"consent withdrawn: {exc}", actor=actor
            )
            cancelled.append(row.id)
    return cancelled
