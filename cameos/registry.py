"""Cameo records and the one function through which every status change goes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cameofarm.cameos import audit
from cameofarm.storage.db import CameoEventRow, CameoRow, Database
from sqlalchemy import select
from sqlalchemy.orm import Session


class CameoStatus(StrEnum):
    """Where a likeness stands. Only VERIFIED cameos may be rendered.

    PENDING: assets extracted, liveness not (yet) proven. VERIFIED: a liveness session passed;
    it lapses to EXPIRED after `enrollment.verified_days` and a new session restores it.
    REVOKED: the owner withdrew it. DELETED: gone for good.
    """

    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    DELETED = "DELETED"


_ALLOWED: dict[CameoStatus | None, set[CameoStatus]] = {
    None: {CameoStatus.PENDING, CameoStatus.VERIFIED},
    CameoStatus.PENDING: {CameoStatus.VERIFIED, CameoStatus.DELETED},
    CameoStatus.VERIFIED: {
        CameoStatus.VERIFIED,  # re-verified before it lapsed: the clock restarts
        CameoStatus.EXPIRED,
        CameoStatus.REVOKED,
        CameoStatus.DELETED,
    },
    CameoStatus.EXPIRED: {CameoStatus.VERIFIED, CameoStatus.REVOKED, CameoStatus.DELETED},
    CameoStatus.REVOKED: {CameoStatus.VERIFIED, CameoStatus.DELETED},
    CameoStatus.DELETED: set(),
}
DAY = 86400.0


class UnknownCameoError(LookupError):
    """No cameo has that id."""


@dataclass(frozen=True)
class CameoRecord:
    """A cameo as the rest of the farm sees it."""

    id: str
    name: str
    owner: str
    status: CameoStatus
    created_at: float
    recording_key: str
    assets_key: str
    summary: dict[str, Any] = field(default_factory=dict)
    verified_at: float | None = None

    @classmethod
    def from_row(cls, row: CameoRow) -> CameoRecord:
        return cls(
            row.id,
            row.name,
            row.owner,
            CameoStatus(row.status),
            row.created_at,
            row.recording_key,
            row.assets_key,
            dict(row.summary or {}),
            row.verified_at,
        )


def new_cameo_id() -> str:
    """Return a fresh cameo id (12 hex chars, prefixed)."""
    return "cam_" + uuid.uuid4().hex[:12]


def transition_cameo(
    session: Session,
    row: CameoRow,
    to: CameoStatus,
    actor: str,
    reason: str = "",
    now: float | None = None,
) -> None:
    """Move a cameo to a new status and write the event row; refuse illegal transitions."""
    current = CameoStatus(row.status) if row.status else None
    if to not in _ALLOWED[current]:
        raise ValueError(f"cameo {row.id}: cannot go from {current} to {to}")
    at = time.time() if now is None else now
    row.status = to.value
    row.updated_at = at
    if to is CameoStatus.VERIFIED:
        row.verified_at = at
    session.add(
        CameoEventRow(
            cameo_id=row.id,
            from_status=current.value if current else None,
            to_status=to.value,
            actor=actor,
            reason=reason,
            at=at,
        )
    )
    audit.record(
        session,
        actor,
        f"cameo.{to.value.lower()}",
        row.id,
        now=at,
        owner=row.owner,
        **{"from": current.value if current else None, "reason": reason},
    )


def create_cameo(
    db: Database,
    *,
    cameo_id: str,
    name: str,
    owner: str,
    recording_key: str,
    assets_key: str,
    summary: dict[str, Any],
    status: CameoStatus = CameoStatus.PENDING,
    reason: str = "enrolled",
    now: float | None = None,
) -> CameoRecord:
    """Insert a cameo record in its first status and return it."""
    now = time.time() if now is None else now
    with db.session() as s:
        row = CameoRow(
            id=cameo_id,
            name=name,
            owner=owner,
            status="",
            created_at=now,
            updated_at=now,
            recording_key=recording_key,
            assets_key=assets_key,
            summary=summary,
        )
        s.add(row)
        s.flush()
        transition_cameo(s, row, status, actor=owner, reason=reason, now=now)
        return CameoRecord.from_row(row)


def add_summary_entries(
    db: Database, cameo_id: str, key: str, entries: dict[str, Any], actor: str
) -> CameoRecord:
    """Add entries (e.g. identities of a newly configured analyzer) under one summary key;
    existing entries are kept. Audited, since they decide one-likeness matches."""
    with db.session() as s:
        row = s.get(CameoRow, cameo_id)
        if row is None:
            raise UnknownCameoError(f"no cameo with id {cameo_id!r}")
        summary = dict(row.summary or {})
        summary[key] = {**summary.get(key, {}), **entries}
        row.summary = summary
        row.updated_at = time.time()
        audit.record(
            s, actor, f"cameo.{key}.added", cameo_id, owner=row.owner, added=sorted(entries)
        )
        return CameoRecord.from_row(row)


def get_cameo(db: Database, cameo_id: str) -> CameoRecord:
    """Return the cameo or raise UnknownCameoError."""
    with db.session() as s:
        row = s.get(CameoRow, cameo_id)
        if row is None:
            raise UnknownCameoError(
                f"no cameo with id {cameo_id!r}; list them with `cameofarm cameos`"
            )
        return CameoRecord.from_row(row)


def list_cameos(db: Database, owner: str | None = None) -> list[CameoRecord]:
    """Return cameos (of one owner, if given), newest first."""
    with db.session() as s:
        query = select(CameoRow).order_by(CameoRow.created_at.desc())
        if owner is not None:
            query = query.where(CameoRow.owner == owner)
        return [CameoRecord.from_row(r) for r in s.scalars(query)]


def set_cameo_status(
    db: Database,
    cameo_id: str,
    to: CameoStatus,
    actor: str,
    reason: str = "",
    now: float | None = None,
) -> CameoRecord:
    """Transition one cameo by id in its own transaction and return it."""
    with db.session() as s:
        row = s.get(CameoRow, cameo_id, with_for_update=True)
        if row is None:
            raise UnknownCameoError(f"no cameo with id {cameo_id!r}")
        transition_cameo(s, row, to, actor=actor, reason=reason, now=now)
        return CameoRecord.from_row(row)


def expire_lapsed(db: Database, verified_days: float, now: float | None = None) -> list[str]:
    """Move VERIFIED cameos whose verification is older than verified_days to EXPIRED."""
    now = time.time() if now is None else now
    cutoff = now - verified_days * DAY
    expired = []
    with db.session() as s:
        query = select(CameoRow).where(
            CameoRow.status == CameoStatus.VERIFIED.value, CameoRow.verified_at < cutoff
        )
        for row in s.scalars(query):
            transition_cameo(
                s,
                row,
                CameoStatus.EXPIRED,
                actor="system",
                reason=f"verification older than {verified_days:g} days",
                now=now,
            )
            expired.append(row.id)
    return expired


def unusable_hint(status: CameoStatus) -> str:
    """What it takes to make a cameo in this (not VERIFIED) status castable again."""
    return {
        CameoStatus.PENDING: "its owner must pass a liveness session "
        "(`cameofarm enroll start --cameo ID`)",
        CameoStatus.EXPIRED: "its verification lapsed; its owner must re-verify "
        "(`cameofarm enroll start --cameo ID`)",
    }.get(status, "its owner withdrew it")
