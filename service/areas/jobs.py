"""Render jobs as their customer sees them: submit, follow, cancel, download, take down."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

from cameofarm.cameos import audit
from cameofarm.cameos.accounts import Principal
from cameofarm.cluster.jobs import (
    JobError,
    JobStatus,
    JobView,
    UnknownJobError,
    cancel_job,
    get_job,
    job_for_token,
    job_history,
    jobs_submitted_since,
    list_jobs,
)
from cameofarm.cluster.jobs.submit import JobRequest, submit_request
from cameofarm.monitoring.metrics import API_RATE_LIMITED
from cameofarm.service.areas.base import (
    Area,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    RateLimited,
    job_error,
)
from cameofarm.storage.db import JobRow
from cameofarm.storage.keys import CAPTION_FORMATS, caption_keys
from sqlalchemy.orm import Session

MAX_SCRIPT_CHARS = 4000


class JobsArea(Area):
    """Submitting, following and ending render jobs, and their downloads."""

    def store_background(self, principal: Principal, data: bytes) -> dict[str, Any]:
        from cameofarm.service.jobs_api import SubmitError, store_background

        try:
            key = store_background(self.storage, data, principal.user, self.config)
        except SubmitError as exc:
            raise BadRequest(str(exc)) from None
        return {"background_id": key.rsplit("/", 1)[-1].rsplit(".", 1)[0]}

    def store_audio_bed(self, principal: Principal, data: bytes) -> dict[str, Any]:
        from cameofarm.pipelines.audio_beds import AudioBedError, store_audio_bed

        try:
            return store_audio_bed(self.storage.objects, data, principal.user)
        except AudioBedError as exc:
            raise BadRequest(str(exc)) from None

    def _quota(self, principal: Principal) -> None:
        limit = self.config.api.jobs_per_day
        since = time.time() - 86400
        times = jobs_submitted_since(self.db, principal.user, since)
        if len(times) >= limit:
            retry = max(1.0, times[-limit] + 86400 - time.time())
            API_RATE_LIMITED.labels(limit="jobs_per_day").inc()
            raise RateLimited(
                f"daily job quota reached ({limit} jobs in 24 h); try again in {retry:.0f} s",
                retry_after=retry,
            )

    def submit(
        self,
        principal: Principal,
        cameo_ids: list[str],
        script: str,
        tier: str | None = None,
        priority: int = 0,
        client_token: str | None = None,
        background_id: str | None = None,
        language: str | None = None,
        scene_id: str | None = None,
        prompt: dict[str, Any] | None = None,
        audio_bed_id: str | None = None,
        bed_level_db: float | None = None,
        captions: str = "sidecar",
    ) -> dict[str, Any]:
        request = self._job_request(
            principal,
            cameo_ids,
            script,
            tier,
            priority,
            client_token,
            background_id,
            language,
            scene_id,
            prompt,
            audio_bed_id,
            bed_level_db,
            captions,
        )
        if client_token is None or job_for_token(self.db, principal.user, client_token) is None:
            self._quota(principal)  # a replay of an accepted job is not a new job
        try:
            job = submit_request(self.db, self.config, request)
        except JobError as exc:
            raise job_error(exc) from None
        return {**job.to_json(), "replayed": job.replayed}

    def _job_request(
        self,
        principal: Principal,
        cameo_ids: list[str],
        script: str,
        tier: str | None = None,
        priority: int = 0,
        client_token: str | None = None,
        background_id: str | None = None,
        language: str | None = None,
        scene_id: str | None = None,
        prompt: dict[str, Any] | None = None,
        audio_bed_id: str | None = None,
        bed_level_db: float | None = None,
        captions: str = "sidecar",
    ) -> JobRequest:
        """The caller's request with its shapes checked, its prompt read, its background and
        audio bed found among the caller's uploads (ApiError)."""
        if not isinstance(cameo_ids, list) or not all(isinstance(c, str) for c in cameo_ids):
            raise BadRequest("cameo_ids must be a list of cameo ids")
        if not isinstance(script, str) or len(script) > MAX_SCRIPT_CHARS:
            raise BadRequest(f"script must be text of at most {MAX_SCRIPT_CHARS} characters")
        if not isinstance(priority, int) or not -10 <= priority <= 10:
            raise BadRequest("priority must be an integer from -10 to 10")
        scene_prompt = None
        if prompt is not None:  # {"text", "framing"?, "emotion"?, "seed"?}
            from cameofarm.pipelines.prompt_scenes import PromptError, check_prompt

            if not isinstance(prompt, dict):
                raise BadRequest("prompt must be an object with text, framing, emotion and seed")
            try:
                scene_prompt = check_prompt(
                    prompt.get("text"),
                    prompt.get("framing", "medium"),
                    prompt.get("emotion", "neutral"),
                    prompt.get("seed", 0),
                    self.config.prompt_scenes.max_prompt_chars,
                )
            except PromptError as exc:
                raise BadRequest(str(exc)) from None
        audio_bed = None
        if audio_bed_id is not None:  # a bed the caller uploaded
            from cameofarm.pipelines.audio_beds import DEFAULT_LEVEL_DB, bed_key

            try:
                bed = bed_key(principal.user, audio_bed_id)
                found = self.storage.objects.exists(bed)
            except ValueError:
                found = False
            if not found:
                raise NotFound(f"you have no audio bed {audio_bed_id[:40]!r}")
            level = DEFAULT_LEVEL_DB if bed_level_db is None else bed_level_db
            audio_bed = {"key": bed, "level_db": level}
        elif bed_level_db is not None:
            raise BadRequest("bed_level_db sets the level of an audio bed: name audio_bed_id")
        key = None
        if background_id is not None:  # an image (.png) or a video (.mp4) the caller uploaded
            stored = [
                f"backgrounds/{principal.user}/{background_id}.{ext}" for ext in ("png", "mp4")
            ]
            try:
                key = next((k for k in stored if self.storage.objects.exists(k)), None)
            except ValueError:
                key = None
            if key is None:
                raise NotFound(f"you have no background {background_id[:40]!r}")
        return JobRequest(
            cameo_ids=cameo_ids,
            script=script,
            tier=tier or next(iter(self.config.tiers)),
            customer=principal.user,
            priority=priority,
            background_key=key,
            client_token=client_token,
            background_digest=background_id,
            language=language,
            scene_id=scene_id,
            org=principal.org,
            prompt=scene_prompt,
            audio_bed=audio_bed,
            captions=captions,
        )

    def get_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        return self._visible(principal, job_id).to_json()

    def _visible(self, principal: Principal, job_id: str) -> JobView:
        try:
            return get_job(self.db, job_id, None if principal.operator else principal.user)
        except UnknownJobError as exc:
            raise NotFound(str(exc)) from None

    def job_history(self, principal: Principal, job_id: str) -> dict[str, Any]:
        self._visible(principal, job_id)
        return {"events": job_history(self.db, job_id)}

    def list_jobs(self, principal: Principal, limit: int = 50) -> dict[str, Any]:
        limit = max(1, min(int(limit), 1000))
        views = list_jobs(self.db, limit=limit, customer=principal.user)
        return {"jobs": [v.to_json() for v in views]}

    def cancel(self, principal: Principal, job_id: str) -> dict[str, Any]:
        job = self._visible(principal, job_id)
        if job.customer != principal.user and not principal.operator:
            # Cameo owners stop others' uses by narrowing the permission or revoking.
            raise Forbidden(
                "only the job's customer cancels it; as the cameo's owner, narrow its "
                "permission or revoke it to stop this use"
            )
        try:
            return cancel_job(self.db, job_id, actor=principal.user).to_json()
        except JobError as exc:
            raise job_error(exc) from None

    def download(
        self, principal: Principal, job_id: str, base_url: str, local: bool = False
    ) -> dict[str, Any]:
        """A presigned URL for the published video (MinIO's own, or one this API signs;
        in-process with a local store, the file's path)."""
        job = self._visible(principal, job_id)
        if job.taken_down_at is not None:
            raise Gone(f"job {job_id}'s video was taken down")
        if job.status is not JobStatus.SUCCEEDED or job.output_key is None:
            raise Conflict(f"job {job_id} is {job.status.value}; nothing is published yet")
        seconds = self.config.api.download_url_seconds
        url = self.storage.objects.presign(job.output_key, seconds)
        expires = int(time.time() + seconds)
        if url is None and local:
            url = self.storage.objects.locate(job.output_key)
        elif url is None:
            sig = self.sign_download(job.output_key, expires)
            url = f"{base_url.rstrip('/')}/v1/files/{job.output_key}?expires={expires}&sig={sig}"
        with self.db.session() as s:
            audit.record(s, principal.user, "job.download", job_id, cameo_ids=list(job.cameo_ids))
        return {"job_id": job_id, "url": url, "expires_at": expires}

    def captions(self, principal: Principal, job_id: str, fmt: str = "vtt") -> str:
        """The published video's captions (WebVTT or SRT), as its viewers may read them."""
        if fmt not in CAPTION_FORMATS:
            raise BadRequest(f"captions come as {' or '.join(CAPTION_FORMATS)}")
        job = self._visible(principal, job_id)
        if job.taken_down_at is not None:
            raise Gone(f"job {job_id}'s video was taken down")
        if job.status is not JobStatus.SUCCEEDED or job.output_key is None:
            raise Conflict(f"job {job_id} is {job.status.value}; nothing is published yet")
        key = caption_keys(job.output_key)[fmt]
        if not self.storage.objects.exists(key):  # published before captions were made
            raise NotFound(f"job {job_id} was published without captions")
        return self.storage.objects.get_bytes(key).decode()

    def _url_key(self) -> bytes:
        path = self.storage.keys_dir / "download-url.key"
        if not path.is_file():  # first use: written aside, then moved into place atomically
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
            tmp.write_bytes(secrets.token_bytes(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_bytes()

    def sign_download(self, key: str, expires: int) -> str:
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self._url_key(), msg, hashlib.sha256).hexdigest()

    def check_download(self, key: str, expires: int, sig: str) -> None:
        if expires < time.time():
            raise Gone("this download link has expired; ask for a new one")
        if not hmac.compare_digest(self.sign_download(key, expires), sig):
            raise Forbidden("this download link is not valid")

    def takedown(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """Remove a published video: by its customer, or by the owner of a cameo in it."""
        self._visible(principal, job_id)

        def decide(s: Session) -> str:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != JobStatus.SUCCEEDED.value or row.output_key is None:
                status = row.status if row is not None else "unknown"
                raise Conflict(f"job {job_id} is {status}; only published videos come down")
            if row.taken_down_at is not None:
                raise Gone(f"job {job_id}'s video was already taken down")
            row.taken_down_at, row.taken_down_by = time.time(), principal.user
            audit.record(s, principal.user, "job.takedown", job_id, cameo_ids=list(row.cameo_ids))
            return row.output_key

        # Marked first, then removed: a failed delete leaves a taken-down row whose object the
        # download route already refuses (410), never a published row without its object.
        key = self.db.transact(decide)
        for each in (key, *caption_keys(key).values()):
            self.storage.objects.delete(each)
        return self._visible(principal, job_id).to_json()
