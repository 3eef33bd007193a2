"""Liveness sessions: `enroll start` issues challenges, `enroll finish` verifies a recording
that performs them and makes (or re-verifies) a VERIFIED cameo."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cameofarm.cameos import CameoRecord, CameoStatus, get_cameo, set_cameo_status
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.configs import EnrollmentConfig
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.reference.recognizer import PhraseRecognizer
from cameofarm.pipelines.checks import check_recording
from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording
from cameofarm.pipelines.extractors import Extractors, as_extractors, identities_of
from cameofarm.pipelines.liveness import (
    Challenge,
    ChallengeResult,
    measure,
    phrase_vocabulary,
    plan_challenges,
    recording_hash,
    verify_challenges,
)
from cameofarm.storage import FarmStorage
from cameofarm.storage.db import EnrollmentSessionRow, UsedRecordingRow

Progress = Callable[[str], None]


class LivenessError(EnrollmentError):
    """Liveness could not be shown; `results` says which challenge failed."""

    def __init__(self, message: str, results: list[ChallengeResult] | None = None) -> None:
        super().__init__(message)
        self.results = results or []


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    owner: str
    nonce: str
    phrase: str
    challenges: tuple[Challenge, ...]
    expires_at: float
    status: str
    cameo_id: str | None

    @classmethod
    def from_row(cls, r: EnrollmentSessionRow) -> Session:
        return cls(
            r.id,
            r.name,
            r.owner,
            r.nonce,
            r.phrase,
            tuple(Challenge(**c) for c in r.challenges),
            r.expires_at,
            r.status,
            r.cameo_id,
        )

    def instructions(self) -> str:
        lines = [
            f"session {self.id} (valid until {time.ctime(self.expires_at)})",
            "record one continuous video, facing the camera:",
            f"  0.0-{self.challenges[0].start:g} s: look at the camera, relaxed",
        ]
        for c in self.challenges:
            lines.append(f"  {c.start:g}-{c.end:g} s: {c.prompt}")
        lines.append("  then: keep talking naturally for at least 30 s, facing the camera")
        return "\n".join(lines)


def start_session(
    storage: FarmStorage,
    cfg: EnrollmentConfig,
    *,
    name: str,
    owner: str,
    cameo_id: str | None = None,
    now: float | None = None,
) -> Session:
    """Open a liveness session with a fresh nonce and challenges in a random order."""
    if not is_display_text(name):
        raise EnrollmentError(f"name must be 1-200 characters, {DISPLAY_TEXT_RULE}")
    if cameo_id is not None:
        cameo = get_cameo(storage.db, cameo_id)
        if cameo.owner != owner:
            raise EnrollmentError(f"cameo {cameo_id} belongs to another owner")
        if cameo.status is CameoStatus.DELETED:
            raise EnrollmentError(f"cameo {cameo_id} is deleted")
    now = time.time() if now is None else now
    plan = plan_challenges(cfg)
    with storage.db.session() as s:
        row = EnrollmentSessionRow(
            id="ses_" + uuid.uuid4().hex[:12],
            name=name,
            owner=owner,
            nonce=plan.nonce,
            phrase=plan.phrase,
            challenges=[c.to_dict() for c in plan.challenges],
            created_at=now,
            expires_at=now + cfg.session_minutes * 60,
            status="OPEN",
            cameo_id=cameo_id,
            detail="",
        )
        s.add(row)
        s.flush()
        return Session.from_row(row)


def _close(
    storage: FarmStorage, session_id: str, status: str, detail: str, cameo_id: str | None = None
) -> None:
    with storage.db.session() as s:
        row = s.get(EnrollmentSessionRow, session_id)
        if row is not None:
            row.status, row.detail = status, detail
            if cameo_id:
                row.cameo_id = cameo_id


def finish_session(
    storage: FarmStorage,
    extractors: Extractors | FaceAnalyzer,
    cfg: EnrollmentConfig,
    session_id: str,
    video: str | Path,
    *,
    audio: str | Path | None = None,
    id_photo: str | Path | None = None,
    now: float | None = None,
    progress: Progress = lambda _: None,
) -> CameoRecord:
    """Verify a recording against its session; return the VERIFIED cameo."""
    ex = as_extractors(extractors)
    analyzer = ex.primary
    now = time.time() if now is None else now
    # 1. The session must be open and unexpired.
    with storage.db.session() as s:
        row = s.get(EnrollmentSessionRow, session_id)
        if row is None:
            raise EnrollmentError(
                f"no enrollment session {session_id!r}; start one with `cameofarm enroll start`"
            )
        session = Session.from_row(row)
    if session.status != "OPEN":
        raise EnrollmentError(f"session {session_id} is {session.status}; start a new one")
    if now > session.expires_at:
        _close(storage, session_id, "EXPIRED", "finished after expiry")
        raise EnrollmentError(f"session {session_id} expired; start a new one")
    # 2. A recording is good for one session only.
    digest = recording_hash(video)
    with storage.db.session() as s:
        used = s.get(UsedRecordingRow, digest)
        if used is not None:
            raise LivenessError(
                f"replay: this exact recording was already presented to session "
                f"{used.session_id}; record a new video for this session"
            )
        s.add(UsedRecordingRow(sha256=digest, session_id=session_id, at=now))
    progress("recording not seen before (replay guard)")
    # 3. The challenges, each in its window, in the issued order.
    until = session.challenges[-1].end + 0.5
    recognizer = PhraseRecognizer(phrase_vocabulary()) if cfg.recognize_phrase else None
    track = measure(video, analyzer, until)
    results = verify_challenges(track, session.challenges, cfg, session.phrase, recognizer)
    for r in results:
        progress(f"{'ok  ' if r.passed else 'FAIL'} {r.kind}: {r.detail}")
    failed = [r for r in results if not r.passed]
    if failed:
        raise LivenessError(
            "liveness failed: " + "; ".join(f"{r.kind} ({r.detail})" for r in failed), results
        )
    reason = f"liveness verified (session {session_id})"
    # 4. New cameo: full checks and extraction. Re-verification: the same face, checks only.
    if session.cameo_id is None:
        record = enroll_recording(
            storage,
            ex,
            video,
            name=session.name,
            owner=session.owner,
            checks=cfg,
            audio=audio,
            verified_by=reason,
            id_photo=id_photo,
            presenter_from=session.challenges[-1].end + 0.5,  # scenes loop the free talking
            progress=progress,
        )
    else:
        record = _reverify(storage, analyzer, cfg, session, video, audio, reason, now)
    _close(storage, session_id, "VERIFIED", reason, record.id)
    return record


def _reverify(
    storage: FarmStorage,
    analyzer: FaceAnalyzer,
    cfg: EnrollmentConfig,
    session: Session,
    video: str | Path,
    audio: str | Path | None,
    reason: str,
    now: float,
) -> CameoRecord:
    assert session.cameo_id is not None
    cameo = get_cameo(storage.db, session.cameo_id)
    report = check_recording(video, analyzer, cfg, audio)
    if not report.accepted:
        raise EnrollmentError(f"recording rejected:\n{report.describe()}", report)
    from cameofarm.models.media import probe_video, read_frames

    info = probe_video(video)
    picks = np.linspace(0, max(info.frame_count - 1, 0), 8).astype(int).tolist()
    frames = read_frames(video, picks)
    known = identities_of(cameo.summary).get(analyzer.name)
    if known is None:
        raise EnrollmentError(
            f"cameo {cameo.id} has no identity from {analyzer.name}, the analyzer that checks "
            "re-verification; enroll the person again"
        )
    distances = []
    for frame in frames.values():
        faces = analyzer.detect(frame)
        if faces:
            distances.append(analyzer.embed(frame, faces[0]).distance(known))
    median = float(np.median(distances)) if distances else float("inf")
    if median > known.same_person:
        raise EnrollmentError(
            f"the face in this recording is not cameo {cameo.id}'s (distance {median:.2f})"
        )
    return set_cameo_status(storage.db, cameo.id, CameoStatus.VERIFIED, session.owner, reason, now)
