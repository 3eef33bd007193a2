"""A cameo's owner at work: settings, permissions, revocation, deletion and its purge, and
every use of their likeness."""

from __future__ import annotations

from typing import Any

from cameofarm.cameos import CameoStatus, UnknownCameoError, transition_cameo
from cameofarm.cameos.accounts import AccountError, Principal, UnknownUserError
from cameofarm.cameos.permissions import (
    approve,
    approved_users,
    owned_cameo,
    set_permission,
    set_restrictions,
    unapprove,
)
from cameofarm.cameos.purge import request_deletion, scan_cameo
from cameofarm.cluster.jobs import JobStatus, JobView, cancel_unpermitted, jobs_using
from cameofarm.service.areas.base import Area, BadRequest, Conflict, NotFound
from cameofarm.storage.db import CameoRow, PurgeRow
from sqlalchemy import select
from sqlalchemy.orm import Session


class CameosArea(Area):
    """Cameos, their permissions and their uses, as their owner sees them."""

    def _cameo_json(self, s: Any, row: CameoRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "owner": row.owner,
            "status": row.status,
            "created_at": row.created_at,
            "verified_at": row.verified_at,
            "permission": row.permission,
            "approved": approved_users(s, row.id),
            "restrictions": list(row.restrictions or []),
            # How renders in its voice scored at enrollment (None: not calibrated).
            "voice": (row.summary or {}).get("voice_calibration"),
        }

    def list_cameos(self, principal: Principal) -> dict[str, Any]:
        with self.db.session() as s:
            query = select(CameoRow).order_by(CameoRow.created_at.desc())
            if not principal.operator:
                query = query.where(CameoRow.owner == principal.user)
            return {"cameos": [self._cameo_json(s, r) for r in s.scalars(query)]}

    def get_cameo(self, principal: Principal, cameo_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            try:
                return self._cameo_json(s, owned_cameo(s, principal, cameo_id))
            except UnknownCameoError as exc:
                raise NotFound(str(exc)) from None

    def _owner_change(self, principal: Principal, cameo_id: str, change: Any) -> dict[str, Any]:
        """Apply one owner's change, then cancel active jobs it no longer allows — atomically.

        If the scheduler moves one of those jobs meanwhile, the whole change is made again on
        a fresh read, so a revocation never fails because a job was dispatched or progressed.
        """

        def decide(s: Session) -> tuple[list[str], dict[str, Any]]:
            change(s)
            s.flush()
            cancelled = cancel_unpermitted(s, self.config, [cameo_id], principal.user)
            return cancelled, self._cameo_json(s, owned_cameo(s, principal, cameo_id))

        try:
            cancelled, out = self.db.transact(decide)
        except UnknownCameoError as exc:
            raise NotFound(str(exc)) from None
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return {**out, "cancelled_jobs": cancelled}

    def set_permission(self, principal: Principal, cameo_id: str, level: str) -> dict[str, Any]:
        return self._owner_change(
            principal, cameo_id, lambda s: set_permission(s, principal, cameo_id, level)
        )

    def approve(self, principal: Principal, cameo_id: str, user: str) -> dict[str, Any]:
        return self._owner_change(
            principal, cameo_id, lambda s: approve(s, principal, cameo_id, user)
        )

    def unapprove(self, principal: Principal, cameo_id: str, user: str) -> dict[str, Any]:
        return self._owner_change(
            principal, cameo_id, lambda s: unapprove(s, principal, cameo_id, user)
        )

    def set_restrictions(
        self, principal: Principal, cameo_id: str, names: list[str]
    ) -> dict[str, Any]:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadRequest("restrictions must be a list of rule names")
        return self._owner_change(
            principal,
            cameo_id,
            lambda s: set_restrictions(s, principal, cameo_id, names, self.config),
        )

    def revoke_cameo(self, principal: Principal, cameo_id: str) -> dict[str, Any]:
        """Withdraw the cameo: no new jobs, queued ones cancelled, running ones unpublished."""

        def change(s: Any) -> None:
            row = owned_cameo(s, principal, cameo_id)
            if row.status in (CameoStatus.REVOKED.value, CameoStatus.DELETED.value):
                raise Conflict(f"cameo {cameo_id} is already {row.status}")
            try:
                transition_cameo(s, row, CameoStatus.REVOKED, principal.user, "revoked by owner")
            except ValueError as exc:
                raise Conflict(str(exc)) from None

        return self._owner_change(principal, cameo_id, change)

    def delete_cameo(self, principal: Principal, cameo_id: str) -> dict[str, Any]:
        """Delete the cameo: unusable at once; its objects are purged (see `purge_status`)."""
        deadline: list[float] = []

        def change(s: Any) -> None:
            row = owned_cameo(s, principal, cameo_id)
            days = self.config.consent.purge_days
            deadline.append(request_deletion(s, row, principal.user, days))

        out = self._owner_change(principal, cameo_id, change)
        return {**out, "purge_deadline": deadline[-1]}

    def purge_status(self, principal: Principal, cameo_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            try:
                owned_cameo(s, principal, cameo_id)
            except UnknownCameoError as exc:
                raise NotFound(str(exc)) from None
            purge = s.get(PurgeRow, cameo_id)
            if purge is None:
                raise NotFound(f"cameo {cameo_id} has not been deleted")
            return {
                "cameo_id": cameo_id,
                "requested_at": purge.requested_at,
                "deadline": purge.deadline,
                "finished_at": purge.finished_at,
                "removed": list(purge.removed or []),
                "error": purge.error,
            }

    def scan_cameo(self, principal: Principal, cameo_id: str) -> dict[str, Any]:
        """Scan the whole object store for anything left of the cameo (the purge proof)."""
        with self.db.session() as s:
            try:
                owned_cameo(s, principal, cameo_id)
            except UnknownCameoError as exc:
                raise NotFound(str(exc)) from None
        report = scan_cameo(self.storage, cameo_id)
        return {
            "cameo_id": cameo_id,
            "scanned_objects": report.scanned,
            "remaining": report.remaining,
            "clean": report.clean,
        }

    def owner_view(self, principal: Principal, cameo_id: str | None = None) -> dict[str, Any]:
        """Every video that casts the caller's cameos: drafts and other people's included."""
        with self.db.session() as s:
            query = select(CameoRow.id).where(CameoRow.owner == principal.user)
            mine = list(s.scalars(query))
            if cameo_id is not None:
                if cameo_id not in mine:
                    raise NotFound(f"you own no cameo with id {cameo_id[:40]!r}")
                mine = [cameo_id]
            uses = []
            for row in jobs_using(s, mine):
                view = JobView.from_row(row)
                uses.append(
                    {
                        "job_id": view.id,
                        "cameo_ids": [c for c in view.cameo_ids if c in mine],
                        "made_by": view.customer,
                        "submitted_at": view.submitted_at,
                        "finished_at": view.finished_at,
                        "status": view.status.value,
                        "draft": view.status is not JobStatus.SUCCEEDED,
                        "published": view.output_key is not None and view.taken_down_at is None,
                        "taken_down_at": view.taken_down_at,
                        "tier": view.tier,
                        "script": view.script,
                    }
                )
        return {"uses": uses}
