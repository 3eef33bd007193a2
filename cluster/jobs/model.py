"""What a render job is: its statuses, the view the CLI, API and scheduler read, its errors."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cameofarm.pipelines.audio_beds import bed_id
from cameofarm.storage.db import JobRow


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


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
    language: str = "en"
    speech_seconds: float | None = None
    quality: dict[str, Any] | None = None
    scene_id: str | None = None
    prompt: dict[str, Any] | None = None
    audio_bed: dict[str, Any] | None = None
    captions: str = "sidecar"
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
            r.language,
            r.speech_seconds,
            r.quality,
            r.scene_id,
            r.prompt,
            r.audio_bed,
            r.captions,
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
            "language": self.language,
            "scene_id": self.scene_id,
            "prompt": self.prompt,
            "audio_bed": (
                {"id": bed_id(self.audio_bed["key"]), "level_db": self.audio_bed["level_db"]}
                if self.audio_bed
                else None
            ),
            "captions": self.captions,
            "speech_seconds": self.speech_seconds,
            "quality": self.quality,
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
