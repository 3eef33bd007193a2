"""Render jobs in the database: submit, look up, and the one function that changes status."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cameofarm.cameos import UnknownCameoError, audit
from cameofarm.cameos.content import ContentError, check_script
from cameofarm.cameos.permissions import ConsentError, cameos_of, may_cast
from cameofarm.cluster.policy import QueuedJob
from cameofarm.configs import FarmConfig
from cameofarm.models.reference.voice import clean_script
from cameofarm.storage.db import Database, JobEventRow, JobRow, UserRow, WebhookDeliveryRow
from sqlalchemy import CompoundSelect, Select, Table, func, select, union_all
from sqlalchemy.exc import IntegrityError
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
    """A job request was refused; the message says why.

    `kind` says what sort of refusal it is (the HTTP API's status code follows it):
    invalid, forbidden, not_found, conflict.
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class UnknownJobError(LookupError):
    """No job has that id (or none the caller may see)."""


class IdempotencyConflict(JobError):
    """A client token was reused for a different request."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "conflict")


class JobChanged(JobError):
    """Someone else changed the job between our read and our write (e.g. a revocation)."""


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
    client_token: str | None = None
    taken_down_at: float | None = None
    replayed: bool = False  # an idempotent resubmission returned this existing job

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
            r.client_token,
            r.taken_down_at,
        )

    def to_json(self) -> dict[str, object]:
        """The job as the HTTP API shows it."""
        return {
            "id": self.id,
            "tier": self.tier,
            "status": self.status.value,
            "customer": self.customer,
            "priority": self.priority,
            "cameo_ids": list(self.cameo_ids),
            "script": self.script,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "progress": round(self.progress, 3),
            "stage": self.stage,
            "published": self.output_key is not None and self.taken_down_at is None,
            "taken_down_at": self.taken_down_at,
            "error": self.error,
            "client_token": self.client_token,
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


def request_hash(
    cameo_ids: Sequence[str], script: str, tier: str, priority: int, bg: str | None
) -> str:
    """A digest of what a submit asked for: a reused client token must ask the same."""
    body = json.dumps([list(cameo_ids), script, tier, priority, bg], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _by_token(session: Session, customer: str, token: str) -> JobRow | None:
    query = select(JobRow).where(JobRow.customer == customer, JobRow.client_token == token)
    return session.scalars(query).first()


def job_for_token(db: Database, customer: str, token: str) -> JobView | None:
    """The job a customer already submitted with this client token, if any."""
    with db.session() as s:
        row = _by_token(s, customer, token)
        return JobView.from_row(row) if row is not None else None


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
    client_token: str | None = None,
    background_digest: str | None = None,
) -> JobView:
    """Validate a render request (tier, script, content policy, consent) and store it QUEUED.

    With a client token, a repeat of the same request returns the first job (replayed=True);
    the same token with a different request raises IdempotencyConflict. Raises JobError
    (ConsentError/ContentError/UnknownCameoError wrapped) saying what was wrong.
    """
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
    digest = request_hash(cameo_ids, script, tier, priority, background_digest)
    if client_token is not None and not (0 < len(client_token) <= 128):
        raise JobError("client_token must be 1-128 characters")
    try:
        with db.session() as s:
            if client_token is not None:
                existing = _by_token(s, customer, client_token)
                if existing is not None:
                    return _replay(existing, digest, client_token)
            check_script(script, config.content)
            may_cast(s, customer, cameo_ids, script, config)
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
                client_token=client_token,
                request_hash=digest,
            )
            s.add(row)
            s.flush()
            transition_job(s, row, JobStatus.QUEUED, "submitted", row.submitted_at, customer)
            return JobView.from_row(row)
    except IntegrityError:
        # A concurrent submit with the same client token won the race: answer with its job.
        with db.session() as s:
            existing = _by_token(s, customer, client_token or "")
            if existing is None:
                raise
            return _replay(existing, digest, client_token or "")
    except ConsentError as exc:
        raise JobError(str(exc), "forbidden") from exc
    except UnknownCameoError as exc:
        raise JobError(str(exc), "not_found") from exc
    except ContentError as exc:
        raise JobError(str(exc)) from exc


def _replay(row: JobRow, digest: str, token: str) -> JobView:
    if row.request_hash != digest:
        raise IdempotencyConflict(
            f"client token {token[:40]!r} was already used for job {row.id} with a different "
            "request; use a new token for a new request"
        )
    view = JobView.from_row(row)
    return JobView(**{**view.__dict__, "replayed": True})


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


@dataclass(frozen=True)
class QueueSnapshot:
    """What the scheduler reads of the queues each tick."""

    depth: dict[str, int]  # tier → queued jobs
    heads: tuple[QueuedJob, ...]  # the first jobs of every (tier, customer), in order


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
            return QueueSnapshot(depth, ())
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
        heads = tuple(QueuedJob(*row) for row in s.execute(query))
    return QueueSnapshot(depth, heads)


# SQLite allows 500 terms in one compound SELECT.
_COMPOUND_LIMIT = 400


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


def requeue_interrupted(db: Database, reason: str) -> list[str]:
    """Put every RUNNING job back in its queue (the farm restarted); return their ids."""
    moved = []
    with db.session() as s:
        for row in s.scalars(select(JobRow).where(JobRow.status == JobStatus.RUNNING.value)):
            transition_job(s, row, JobStatus.QUEUED, reason)
            moved.append(row.id)
    return moved


# --- consent at dispatch, at publish, and when it is withdrawn ------------------------------


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


def finish_published(db: Database, config: FarmConfig, job_id: str, output_key: str) -> JobView:
    """Mark a rendered job SUCCEEDED with its output, if it is still running and its consent
    still holds, in one transaction. Raise JobChanged if not (the caller unpublishes); a job
    whose consent lapsed is CANCELLED in that same transaction."""

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
