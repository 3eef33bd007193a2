"""Cameo records and the one function through which every status change goes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cameofarm.storage.db import CameoEventRow, CameoRow, Database
from sqlalchemy import select
from sqlalchemy.orm import Session


class CameoStatus(StrEnum):
    """Where a likeness stands. Only ACTIVE cameos may be rendered.

    ACTIVE is what the foundation's minimal enrollment grants (assets extracted, no liveness
    check); the enrollment issue splits it into PENDING → VERIFIED with liveness.
    """

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    DELETED = "DELETED"


_ALLOWED: dict[CameoStatus | None, set[CameoStatus]] = {
    None: {CameoStatus.PENDING, CameoStatus.ACTIVE},
    CameoStatus.PENDING: {CameoStatus.ACTIVE, CameoStatus.DELETED},
    CameoStatus.ACTIVE: {CameoStatus.REVOKED, CameoStatus.DELETED},
    CameoStatus.REVOKED: {CameoStatus.ACTIVE, CameoStatus.DELETED},
    CameoStatus.DELETED: set(),
}


class UnknownCameoError(LookupError):
    """No cameo has that id."""


class CameoUnavailableError(PermissionError):
    """The cameo exists but may not be rendered in its current status."""


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


def create_cameo(
    db: Database,
    *,
    cameo_id: str,
    name: str,
    owner: str,
    recording_key: str,
    assets_key: str,
    summary: dict[str, Any],
    status: CameoStatus = CameoStatus.ACTIVE,
    reason: str = "enrolled",
) -> CameoRecord:
    """Insert a cameo record in its first status and return it."""
    now = time.time()
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


def require_usable(db: Database, cameo_ids: list[str] | tuple[str, ...]) -> list[CameoRecord]:
    """Return the cameos if every one may be rendered now; raise saying which may not."""
    records = [get_cameo(db, cid) for cid in cameo_ids]
    for rec in records:
        if rec.status is not CameoStatus.ACTIVE:
            raise CameoUnavailableError(
                f"cameo {rec.id} ({rec.name}) is {rec.status.value} and cannot be rendered"
            )
    return records
