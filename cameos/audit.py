"""The audit log: append-only rows, each chained to the one before it by SHA-256.

Every use of a likeness, permission change, verification, revocation and deletion is written
with `record()` in the same transaction as the change itself, so the log and the state it
describes cannot disagree. Each row's hash covers its content and the previous row's hash;
a single head row holds the newest seq and hash. `verify_audit()` walks the chain and names
each row that was edited, removed or moved.

Appends first update the head row (a row lock on PostgreSQL; the write lock on SQLite), so
concurrent writers from the API, the scheduler and the CLI are serialised.

The chain proves the log is intact relative to its head. Someone who can rewrite the whole
table and the head can forge a new chain: anchor `cameofarm audit head` somewhere they
cannot write (a ticket, a transparency log) to close that gap.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cameofarm.storage.db import AuditHeadRow, AuditRow, Database
from sqlalchemy import select, update
from sqlalchemy.orm import Session

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str, at: float, actor: str, action: str, subject: str, detail: Any
) -> str:
    """The SHA-256 of one entry's canonical JSON, chained to the previous entry's hash."""
    body = json.dumps(
        [prev_hash, repr(float(at)), actor, action, subject, detail],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    now: float | None = None,
    **detail: Any,
) -> int:
    """Append one entry inside the caller's transaction; return its seq."""
    session.flush()
    at = time.time() if now is None else now
    # Take the chain's lock before reading its head.
    locked = session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=AuditHeadRow.seq)
    ).rowcount  # type: ignore[attr-defined]
    if not locked:
        session.add(AuditHeadRow(id=1, seq=0, hash=GENESIS))
        session.flush()
    head = session.get(AuditHeadRow, 1, populate_existing=True)
    assert head is not None
    clean = json.loads(json.dumps(detail, default=str))
    seq = head.seq + 1
    digest = entry_hash(head.hash, at, actor, action, subject, clean)
    session.add(
        AuditRow(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            detail=clean,
            prev_hash=head.hash,
            hash=digest,
        )
    )
    head.seq, head.hash = seq, digest
    session.flush()
    return seq


def append(db: Database, actor: str, action: str, subject: str, **detail: Any) -> int:
    """Append one entry in its own transaction."""
    with db.session() as s:
        return record(s, actor, action, subject, **detail)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
        }


def list_audit(
    db: Database,
    subjects: list[str] | None = None,
    actor: str | None = None,
    after: int = 0,
    limit: int = 200,
) -> list[AuditEntry]:
    """Return entries (about any of `subjects`, or by `actor`) after seq `after`, oldest first."""
    with db.session() as s:
        query = select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(limit)
        if subjects is not None:
            query = query.where(AuditRow.subject.in_(subjects))
        if actor is not None:
            query = query.where(AuditRow.actor == actor)
        return [
            AuditEntry(r.seq, r.at, r.actor, r.action, r.subject, dict(r.detail or {}))
            for r in s.scalars(query)
        ]


@dataclass
class AuditReport:
    rows: int
    head_seq: int
    head_hash: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_audit(db: Database) -> AuditReport:
    """Walk the chain; report every row that was edited, removed or moved, by seq."""
    with db.session() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.seq)))
        head = s.get(AuditHeadRow, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    report = AuditReport(len(rows), head_seq, head_hash)
    problems = report.problems
    by_hash = {r.hash: r.seq for r in rows}
    prev_hash, prev_seq = GENESIS, 0
    for row in rows:
        content = entry_hash(row.prev_hash, row.at, row.actor, row.action, row.subject, row.detail)
        if row.seq != prev_seq + 1:
            missing = (
                f"row {prev_seq + 1}"
                if row.seq == prev_seq + 2
                else f"rows {prev_seq + 1}..{row.seq - 1}"
            )
            problems.append(f"{missing} removed (row {row.seq} follows row {prev_seq})")
        if content != row.hash:
            problems.append(
                f"row {row.seq} edited: its content ({row.action} {row.subject} by {row.actor}) "
                "no longer matches its hash"
            )
        elif row.prev_hash != prev_hash and row.seq == prev_seq + 1:
            moved_from = by_hash.get(row.prev_hash)
            if moved_from is not None:
                problems.append(
                    f"row {row.seq} moved: it was written after row {moved_from}, "
                    f"not after row {prev_seq}"
                )
            elif prev_seq:
                problems.append(
                    f"row {prev_seq} edited: its hash was recomputed, but row {row.seq} "
                    "is chained to the original"
                )
            else:
                problems.append(f"row {row.seq} does not chain to the start of the log")
        prev_hash, prev_seq = row.hash, row.seq
    if head_seq > prev_seq:
        problems.append(
            f"row {head_seq} removed from the end"
            if head_seq == prev_seq + 1
            else f"rows {prev_seq + 1}..{head_seq} removed from the end"
        )
    elif head_seq < prev_seq or (rows and head_hash != prev_hash):
        problems.append(f"the head (seq {head_seq}) does not match the last row (seq {prev_seq})")
    return report
