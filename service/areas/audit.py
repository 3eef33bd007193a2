"""The audit log: read as the caller may see it, and its hash chain verified."""

from __future__ import annotations

from typing import Any

from cameofarm.cameos import audit
from cameofarm.cameos.accounts import Principal
from cameofarm.cluster.jobs import jobs_using
from cameofarm.service.areas.base import Area
from cameofarm.storage.db import CameoRow, JobRow
from sqlalchemy import select


class AuditArea(Area):
    """Reading and verifying the audit log."""

    def audit_log(self, principal: Principal, after: int = 0, limit: int = 200) -> dict[str, Any]:
        """Operators see everything; a user sees entries about their account, cameos and jobs."""
        limit = max(1, min(int(limit), 1000))
        if principal.operator:
            entries = audit.list_audit(self.db, after=after, limit=limit)
        else:
            with self.db.session() as s:
                mine = list(s.scalars(select(CameoRow.id).where(CameoRow.owner == principal.user)))
                jobs = [r.id for r in jobs_using(s, mine)]
                jobs += list(s.scalars(select(JobRow.id).where(JobRow.customer == principal.user)))
            subjects = sorted({principal.user, *mine, *jobs})
            entries = audit.list_audit(self.db, subjects, after=after, limit=limit)
        return {"entries": [e.to_json() for e in entries]}

    def audit_verify(self, principal: Principal) -> dict[str, Any]:
        self._operator(principal)
        report = audit.verify_audit(self.db)
        return {
            "ok": report.ok,
            "rows": report.rows,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "problems": report.problems,
        }
