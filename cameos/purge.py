"""Deleting a cameo: unusable at once, every stored object of it purged by a deadline.

`request_deletion` (inside the caller's transaction) marks the cameo DELETED and records a
purge with its deadline (`consent.purge_days`). `purge_cameo` removes the objects: the
recording and speech, the face identity, voice profile and mouth atlas, every output that
casts the cameo, and replica caches (through the `forget` callback); it also drops the
embedding and first-frame data kept in the database row. The scheduler runs due purges on
every tick, so in practice a purge finishes within a second of the request while the farm
is up; `cameofarm purge run` does it with the farm down.

`scan_cameo` is the proof: it lists every object in the store and reports any whose key is
the cameo's, any output of a job that cast it, and any object whose bytes name its id
(outputs carry cameo ids in their C2PA manifest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cameofarm.cameos import audit
from cameofarm.cameos.registry import CameoStatus, UnknownCameoError, transition_cameo
from cameofarm.storage.db import CameoGrantRow, CameoRow, JobRow, PurgeRow
from cameofarm.storage.farm import FarmStorage
from cameofarm.storage.keys import caption_keys
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

Forget = Callable[[list[str]], object]  # its return value is ignored
_DAY = 86400.0


def cameo_prefix(cameo_id: str) -> str:
    return f"cameos/{cameo_id}/"


def request_deletion(
    session: Session, row: CameoRow, actor: str, purge_days: float, reason: str = ""
) -> float:
    """Mark the cameo DELETED and schedule its purge; return the purge deadline."""
    now = time.time()
    if row.status != CameoStatus.DELETED.value:
        transition_cameo(session, row, CameoStatus.DELETED, actor, reason or "deleted by owner")
    session.execute(delete(CameoGrantRow).where(CameoGrantRow.cameo_id == row.id))
    existing = session.get(PurgeRow, row.id)
    if existing is not None:
        return existing.deadline
    deadline = now + purge_days * _DAY
    session.add(PurgeRow(cameo_id=row.id, requested_by=actor, requested_at=now, deadline=deadline))
    audit.record(session, actor, "cameo.purge_requested", row.id, deadline=deadline)
    return deadline


@dataclass
class PurgeResult:
    cameo_id: str
    removed: list[str] = field(default_factory=list)
    finished_at: float | None = None


def _output_keys(session: Session, cameo_id: str) -> list[str]:
    keys = []
    for job in session.scalars(select(JobRow)):
        if cameo_id in (job.cameo_ids or []) and job.output_key:
            keys += [job.output_key, *caption_keys(job.output_key).values()]
    return keys


def purge_cameo(storage: FarmStorage, cameo_id: str, forget: Forget | None = None) -> PurgeResult:
    """Remove every stored object of a deleted cameo and record that it is done."""
    with storage.db.session() as s:
        row = s.get(CameoRow, cameo_id)
        if row is None:
            raise UnknownCameoError(f"no cameo with id {cameo_id[:40]!r}")
        if row.status != CameoStatus.DELETED.value:
            raise ValueError(f"cameo {cameo_id} is {row.status}; only deleted cameos are purged")
        keys = set(storage.objects.list(cameo_prefix(cameo_id)))
        keys |= {row.recording_key} | set(_output_keys(s, cameo_id))
        assets_key = row.assets_key
    if forget is not None:
        forget([cameo_prefix(cameo_id), assets_key, *sorted(keys)])
    removed = []
    for key in sorted(keys):
        if storage.objects.exists(key):
            storage.objects.delete(key)
            removed.append(key)
    finished = time.time()
    with storage.db.session() as s:
        row = s.get(CameoRow, cameo_id)
        assert row is not None
        row.summary = {"purged": True}
        for job in s.scalars(select(JobRow)):
            if cameo_id in (job.cameo_ids or []) and job.output_key and job.taken_down_at is None:
                job.taken_down_at, job.taken_down_by = finished, "purge"
        purge = s.get(PurgeRow, cameo_id)
        if purge is not None:
            purge.finished_at = finished
            purge.removed = removed
            purge.error = None
        audit.record(s, "purger", "cameo.purged", cameo_id, objects=len(removed))
    return PurgeResult(cameo_id, removed, finished)


def due_purges(storage: FarmStorage) -> list[str]:
    """Cameo ids whose purge has not finished (all of them are due: purges run at once)."""
    with storage.db.session() as s:
        query = select(PurgeRow.cameo_id).where(PurgeRow.finished_at.is_(None))
        return list(s.scalars(query))


def record_purge_error(storage: FarmStorage, cameo_id: str, error: str) -> None:
    with storage.db.session() as s:
        purge = s.get(PurgeRow, cameo_id)
        if purge is not None:
            purge.error = error[:2000]


def run_due_purges(storage: FarmStorage, forget: Forget | None = None) -> list[PurgeResult]:
    """Run every unfinished purge; a failing one is recorded and retried next time."""
    done = []
    for cameo_id in due_purges(storage):
        try:
            done.append(purge_cameo(storage, cameo_id, forget))
        except Exception as exc:
            record_purge_error(storage, cameo_id, f"{type(exc).__name__}: {exc}")
    return done


@dataclass
class ScanReport:
    cameo_id: str
    scanned: int
    remaining: list[str]

    @property
    def clean(self) -> bool:
        return not self.remaining


def scan_cameo(storage: FarmStorage, cameo_id: str, read_contents: bool = True) -> ScanReport:
    """List (and read) every object in the store; return those that still belong to the cameo."""
    with storage.db.session() as s:
        row = s.get(CameoRow, cameo_id)
        if row is None:
            raise UnknownCameoError(f"no cameo with id {cameo_id[:40]!r}")
        own = {row.recording_key, *_output_keys(s, cameo_id)}
    needle = cameo_id.encode()
    remaining, scanned = [], 0
    for key in storage.objects.list(""):
        scanned += 1
        named = key.startswith(cameo_prefix(cameo_id)) or key in own
        if named or (read_contents and needle in storage.objects.get_bytes(key)):
            remaining.append(key)
    return ScanReport(cameo_id, scanned, remaining)
