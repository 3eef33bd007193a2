"""Batches in the database: stored in one transaction with their jobs, followed, cancelled,
retried, and their results sheet. The rows were checked before (`plan_job` per row)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cameofarm.cluster.jobs import JobError, JobStatus, cancel_job
from cameofarm.cluster.jobs.submit import JobPlan, check_access, queue_room, store_planned
from cameofarm.configs import FarmConfig
from cameofarm.storage.db import BatchItemRow, BatchRow, Database, JobRow
from cameofarm.storage.keys import caption_keys
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

RESULT_COLUMNS = (
    "row",
    "output",
    "job_id",
    "status",
    "error",
    "tier",
    "language",
    "attempts",
    "seconds",
    "output_key",
    "captions_vtt",
    "captions_srt",
    "c2pa_manifest",
    "face_to_cameo",
    "face_recognised",
    "lip_sync",
    "voice_to_cameo",
    "voice_gain",
    "voice_words_recovered",
    "voice_meets_targets",
    "voice_clear",
)


class UnknownBatchError(LookupError):
    """No such batch, or not the caller's."""


@dataclass(frozen=True)
class PlannedRow:
    """A manifest row that passed every check, and the name of its video."""

    row: int
    output: str
    plan: JobPlan


def find_batch(db: Database, customer: str, digest: str) -> str | None:
    """The customer's batch made from a file with this digest, if any."""
    with db.session() as s:
        return s.scalar(
            select(BatchRow.id).where(BatchRow.customer == customer, BatchRow.digest == digest)
        )


def create_batch(
    db: Database,
    config: FarmConfig,
    *,
    customer: str,
    org: str,
    name: str,
    digest: str,
    total_rows: int,
    planned: list[PlannedRow],
    skipped: list[dict[str, Any]],
) -> tuple[str, bool]:
    """Store the batch and queue a job per planned row, all or nothing; return its id and
    whether it already existed (the same file again: nothing new is queued)."""
    now = time.time()
    try:
        with db.session() as s:
            existing = s.scalar(
                select(BatchRow.id).where(BatchRow.customer == customer, BatchRow.digest == digest)
            )
            if existing is not None:
                return existing, True
            wanted = Counter(p.plan.tier for p in planned)
            for tier, n in wanted.items():
                room = queue_room(s, config, tier)
                if n > room:
                    raise JobError(
                        f"the {tier} queue has room for {room} more jobs and this batch has "
                        f"{n} {tier} rows: split the manifest or wait for the queue to drain"
                    )
            batch = BatchRow(
                id="bat_" + uuid.uuid4().hex[:12],
                customer=customer,
                org_id=org,
                name=name[:200],
                digest=digest,
                created_at=now,
                rows=total_rows,
                skipped=skipped,
            )
            s.add(batch)
            for p in planned:
                job = store_planned(s, p.plan, now)
                s.add(BatchItemRow(batch_id=batch.id, row=p.row, output=p.output, job_id=job.id))
            return batch.id, False
    except IntegrityError:  # the same file submitted at the same moment: the other one won
        found = find_batch(db, customer, digest)
        if found is None:
            raise
        return found, True


def _batch(s: Session, batch_id: str, viewer: str | None) -> BatchRow:
    row = s.get(BatchRow, batch_id)
    if row is None or (viewer is not None and row.customer != viewer):
        raise UnknownBatchError(f"no batch {batch_id[:40]!r}")
    return row


def _items(s: Session, batch_id: str) -> list[tuple[BatchItemRow, JobRow]]:
    query = (
        select(BatchItemRow, JobRow)
        .join(JobRow, JobRow.id == BatchItemRow.job_id)
        .where(BatchItemRow.batch_id == batch_id)
        .order_by(BatchItemRow.row)
    )
    return [(item, job) for item, job in s.execute(query).all()]


def batch_status(db: Database, batch_id: str, viewer: str | None = None) -> dict[str, Any]:
    """How far the batch is: jobs by status, and an ETA from its measured throughput."""
    now = time.time()
    with db.session() as s:
        batch = _batch(s, batch_id, viewer)
        items = _items(s, batch_id)
    counts = Counter(job.status for _, job in items)
    ended = [job for _, job in items if job.finished_at is not None and job.started_at]
    left = counts[JobStatus.QUEUED.value] + counts[JobStatus.RUNNING.value]
    eta = None
    if ended and left:
        began = min(job.started_at or now for job in ended)
        rate = len(ended) / max(1e-6, max(job.finished_at or now for job in ended) - began)
        eta = round(left / rate, 1)
    return {
        "batch_id": batch.id,
        "name": batch.name,
        "created_at": batch.created_at,
        "rows": batch.rows,
        "jobs": len(items),
        "skipped": batch.skipped,
        "cancelled": batch.cancelled_at is not None,
        "completed_at": batch.completed_at,
        "counts": {status.value: counts.get(status.value, 0) for status in JobStatus},
        "done": left == 0,
        "eta_s": eta,
    }


def list_batches(db: Database, customer: str, limit: int = 50) -> list[dict[str, Any]]:
    with db.session() as s:
        ids = s.scalars(
            select(BatchRow.id)
            .where(BatchRow.customer == customer)
            .order_by(BatchRow.created_at.desc())
            .limit(limit)
        ).all()
    return [batch_status(db, b) for b in ids]


def cancel_batch(db: Database, batch_id: str, viewer: str | None, actor: str) -> dict[str, Any]:
    """Cancel every job of the batch that has not ended (running ones stop at their next
    stage); what was published stays."""
    with db.session() as s:
        batch = _batch(s, batch_id, viewer)
        batch.cancelled_at = batch.cancelled_at or time.time()
        open_jobs = [
            job.id
            for _, job in _items(s, batch_id)
            if job.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        ]
    for job_id in open_jobs:
        try:
            cancel_job(db, job_id, f"batch {batch_id} cancelled", actor)
        except JobError:  # it ended meanwhile
            continue
    return batch_status(db, batch_id)


def retry_failed(
    db: Database, config: FarmConfig, batch_id: str, viewer: str | None
) -> dict[str, Any]:
    """Queue a new job for every row whose job failed, checked again for consent and content
    (an owner may have revoked meanwhile); return the rows retried and those refused."""
    retried, refused = [], []
    with db.session() as s:
        batch = _batch(s, batch_id, viewer)
        failed = [(item, job) for item, job in _items(s, batch_id) if job.status == "FAILED"]
        for item, job in failed:
            plan = JobPlan(
                cameo_ids=tuple(job.cameo_ids),
                script=job.script,
                tier=job.tier,
                customer=job.customer,
                priority=job.priority,
                background_key=job.background_key,
                client_token=None,
                request_hash=job.request_hash,
                language=job.language,
                speech_seconds=job.speech_seconds or 0.0,
                scene_id=job.scene_id,
                prompt=job.prompt,
                audio_bed=job.audio_bed,
                captions=job.captions,
                org=batch.org_id or None,
                prompt_text=str(job.prompt["text"]) if job.prompt else None,
            )
            try:
                check_access(s, plan, config)  # reads only: a refusal leaves nothing behind
            except JobError as exc:
                refused.append({"row": item.row, "reason": str(exc)})
                continue
            new = store_planned(s, plan)
            item.earlier_jobs = [*item.earlier_jobs, job.id]
            item.job_id = new.id
            batch.completed_at = None  # it completes (and says so) again when these end
            retried.append({"row": item.row, "job_id": new.id})
    return {"batch_id": batch_id, "retried": retried, "refused": refused}


def _gain(voice: dict[str, Any]) -> float | None:
    """What the cameo's voice adds over the stock voice, from a stored voice report."""
    if voice.get("to_cameo") is None or voice.get("base_to_cameo") is None:
        return None
    return round(voice["to_cameo"] - voice["base_to_cameo"], 4)


def batch_results(db: Database, batch_id: str, viewer: str | None = None) -> list[dict[str, Any]]:
    """The results sheet: one line per row (RESULT_COLUMNS)."""
    with db.session() as s:
        _batch(s, batch_id, viewer)
        items = _items(s, batch_id)
    sheet = []
    for item, job in items:
        quality = job.quality or {}
        face, voice = quality.get("face") or {}, quality.get("voice") or {}
        captions = caption_keys(job.output_key) if job.output_key else {}
        took = None
        if job.finished_at is not None and job.started_at is not None:
            took = round(job.finished_at - job.started_at, 2)
        sheet.append(
            {
                "row": item.row,
                "output": item.output,
                "job_id": job.id,
                "status": job.status,
                "error": job.error or "",
                "tier": job.tier,
                "language": job.language,
                "attempts": job.attempts,
                "seconds": took,
                "output_key": job.output_key or "",
                "captions_vtt": captions.get("vtt", ""),
                "captions_srt": captions.get("srt", ""),
                "c2pa_manifest": (quality.get("c2pa") or {}).get("manifest_id") or "",
                "face_to_cameo": face.get("to_cameo"),
                "face_recognised": face.get("recognised"),
                "lip_sync": face.get("lip_sync"),
                "voice_to_cameo": voice.get("to_cameo"),
                "voice_gain": _gain(voice),
                "voice_words_recovered": voice.get("words_recovered"),
                "voice_meets_targets": voice.get("meets_targets"),
                "voice_clear": voice.get("clear"),
            }
        )
    return sheet
