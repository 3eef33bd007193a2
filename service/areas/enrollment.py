"""Enrollment sessions: a liveness challenge opened, then a calibration clip checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cameofarm.cameos import UnknownCameoError, audit
from cameofarm.cameos.accounts import Principal
from cameofarm.service.areas.base import Area, BadRequest, NotFound, Unavailable, display_text


class EnrollmentArea(Area):
    """Opening and finishing enrollment sessions."""

    def start_enrollment(
        self, principal: Principal, name: str, cameo_id: str | None = None
    ) -> dict[str, Any]:
        from cameofarm.pipelines.enroll import EnrollmentError
        from cameofarm.pipelines.verify import start_session

        try:
            session = start_session(
                self.storage,
                self.config.enrollment,
                name=display_text(name, "name"),
                owner=principal.user,
                cameo_id=cameo_id,
            )
        except UnknownCameoError as exc:
            raise NotFound(str(exc)) from None
        except EnrollmentError as exc:
            raise BadRequest(str(exc)) from None
        with self.db.session() as s:
            audit.record(s, principal.user, "enrollment.start", session.id, cameo_id=cameo_id)
        return {
            "session_id": session.id,
            "phrase": session.phrase,
            "expires_at": session.expires_at,
            "challenges": [c.to_dict() for c in session.challenges],
            "instructions": session.instructions(),
        }

    def get_session_owner_check(self, principal: Principal, session_id: str) -> None:
        """Raise NotFound unless the caller opened this enrollment session."""
        from cameofarm.storage.db import EnrollmentSessionRow

        with self.db.session() as s:
            row = s.get(EnrollmentSessionRow, session_id)
            if row is None or row.owner != principal.user:
                raise NotFound(f"you have no enrollment session {session_id[:40]!r}")

    def finish_enrollment(
        self,
        principal: Principal,
        session_id: str,
        video: str | Path,
        id_photo: str | Path | None = None,
        audio: str | Path | None = None,
    ) -> dict[str, Any]:
        from cameofarm.pipelines.enroll import EnrollmentError
        from cameofarm.pipelines.extractors import farm_extractors
        from cameofarm.pipelines.verify import finish_session

        self.get_session_owner_check(principal, session_id)
        log: list[str] = []
        try:
            extractors = farm_extractors(self.config, self.storage)
        except ValueError as exc:  # a missing or corrupt model the enrollment config names
            raise Unavailable(f"enrollment cannot run: {exc}") from None
        try:
            record = finish_session(
                self.storage,
                extractors,
                self.config.enrollment,
                session_id,
                video,
                audio=audio,
                id_photo=id_photo,
                progress=log.append,
            )
        except EnrollmentError as exc:
            with self.db.session() as s:
                audit.record(s, principal.user, "enrollment.refused", session_id, reason=str(exc))
            raise BadRequest(f"enrollment refused: {exc}") from None
        return {"cameo_id": record.id, "status": record.status.value, "log": log}
