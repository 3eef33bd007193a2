"""The farm's operations as one authenticated caller sees them.

Every HTTP route (`service.http`) and every CLI command in embedded mode calls exactly one
method here with the authenticated `Principal`. Methods answer plain JSON-ready dicts and
raise `ApiError` subclasses whose `status` is the HTTP status code, so both front ends say
the same thing for the same mistake.

Visibility rule: a job is visible to its customer and to the owners of the cameos it casts;
to anyone else it does not exist (404, never 403). A cameo's settings are visible only to its
owner (and operators).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from cameofarm.cameos import CameoStatus, UnknownCameoError, audit, transition_cameo
from cameofarm.cameos.accounts import (
    AccountError,
    AuthError,
    Principal,
    UnknownUserError,
    authenticate,
    create_user,
    follow,
    get_user,
    init_operator,
    issue_key,
    list_keys,
    revoke_key,
    set_webhook,
    unfollow,
)
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.cameos.permissions import (
    approve,
    approved_users,
    owned_cameo,
    set_permission,
    set_restrictions,
    unapprove,
)
from cameofarm.cameos.purge import request_deletion, scan_cameo
from cameofarm.cluster.egress import AllowRule, DestinationRefused, resolve
from cameofarm.cluster.jobs import (
    TERMINAL,
    JobError,
    JobStatus,
    JobView,
    UnknownJobError,
    cancel_job,
    cancel_unpermitted,
    get_job,
    job_for_token,
    job_history,
    jobs_submitted_since,
    jobs_using,
    list_jobs,
    submit_job,
)
from cameofarm.cluster.webhooks import deliveries
from cameofarm.configs import FarmConfig
from cameofarm.storage import FarmStorage
from cameofarm.storage.db import CameoRow, FollowRow, JobRow, PurgeRow, UserRow
from sqlalchemy import select
from sqlalchemy.orm import Session

MAX_SCRIPT_CHARS = 4000


class ApiError(Exception):
    """A refused request: `status` is its HTTP status code, the message says what to do."""

    status = 400

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(ApiError):
    status = 422


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class TooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    status = 429


_JOB_KIND = {"invalid": BadRequest, "forbidden": Forbidden, "not_found": NotFound}


def _job_error(exc: JobError) -> ApiError:
    if exc.kind == "conflict":
        return Conflict(str(exc))
    return _JOB_KIND.get(exc.kind, BadRequest)(str(exc))


def _text(value: Any, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} is required")
    if not is_display_text(value, limit):
        raise BadRequest(f"{what} must be at most {limit} characters, {DISPLAY_TEXT_RULE}")
    return value


class FarmAPI:
    """Operations on one farm's storage, each checked against the caller."""

    def __init__(self, config: FarmConfig, storage: FarmStorage) -> None:
        self.config = config
        self.storage = storage
        self.db = storage.db

    # --- who is calling ------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        try:
            return authenticate(self.db, token)
        except AuthError as exc:
            raise Unauthorized(str(exc)) from None

    @staticmethod
    def _operator(principal: Principal) -> None:
        if not principal.operator:
            raise Forbidden("only an operator may do that")

    # --- users, keys, follows, webhooks --------------------------------------------------

    def init_operator(self, user: str, org: str) -> dict[str, Any]:
        try:
            principal, token = init_operator(self.db, user, org)
        except AccountError as exc:
            raise Conflict(str(exc)) from None
        return {"user": principal.user, "org": principal.org, "operator": True, "api_key": token}

    def create_user(
        self, principal: Principal, user: str, org: str, operator: bool = False
    ) -> dict[str, Any]:
        self._operator(principal)
        try:
            created, token = create_user(self.db, principal.user, user, org, operator)
        except AccountError as exc:
            kind = Conflict if "already exists" in str(exc) else BadRequest
            raise kind(str(exc)) from None
        return {"user": created.user, "org": created.org, "operator": operator, "api_key": token}

    def whoami(self, principal: Principal) -> dict[str, Any]:
        with self.db.session() as s:
            row = get_user(s, principal.user)
            following = s.scalars(select(FollowRow.followee).where(FollowRow.follower == row.id))
            followers = s.scalars(select(FollowRow.follower).where(FollowRow.followee == row.id))
            return {
                "user": row.id,
                "org": row.org_id,
                "operator": bool(row.operator),
                "following": sorted(following),
                "followers": sorted(followers),
                "webhook_url": row.webhook_url,
            }

    def issue_key(
        self, principal: Principal, label: str = "", expires_in_days: float | None = None
    ) -> dict[str, Any]:
        try:
            token = issue_key(self.db, principal, _text(label or "key", "label"), expires_in_days)
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return {"api_key": token}

    def list_keys(self, principal: Principal, user: str | None = None) -> dict[str, Any]:
        """The caller's API keys (an operator may name a user): ids, labels, states."""
        try:
            return {"keys": [k.to_json() for k in list_keys(self.db, principal, user)]}
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None

    def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke a key at once: its next request answers 401. Audited with who did it."""
        try:
            return revoke_key(self.db, principal, key_id).to_json()
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None

    def follow(self, principal: Principal, other: str) -> dict[str, Any]:
        try:
            follow(self.db, principal, other)
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return self.whoami(principal)

    def unfollow(self, principal: Principal, other: str) -> dict[str, Any]:
        """Stop following; mutual-only uses of either side's cameos stop at once."""

        def change(s: Session) -> list[str]:
            if not unfollow(s, principal, other):
                return []
            s.flush()
            owners = [principal.user, other]
            cameos = list(s.scalars(select(CameoRow.id).where(CameoRow.owner.in_(owners))))
            return cancel_unpermitted(s, self.config, cameos, principal.user)

        # Re-decided on a fresh read if the scheduler touched one of the jobs meanwhile.
        cancelled = self.db.transact(change)
        return {**self.whoami(principal), "cancelled_jobs": cancelled}

    def set_webhook(self, principal: Principal, url: str | None) -> dict[str, Any]:
        """Set where job-completion webhooks go; internal destinations are refused now (and
        again at every delivery, since a name may later resolve elsewhere)."""
        if url is not None:
            allow = [AllowRule.parse(e) for e in self.config.webhooks.allow_destinations]
            try:
                resolve(url, allow, lookup=False)
            except DestinationRefused as exc:
                raise BadRequest(f"webhook url refused: {exc}") from None
        try:
            secret = set_webhook(self.db, principal, url)
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return {"webhook_url": url, "secret": secret}

    def webhook_deliveries(self, principal: Principal, job_id: str | None) -> dict[str, Any]:
        return {"deliveries": deliveries(self.db, principal.user, job_id)}

    # --- cameos and permissions -----------------------------------------------------------

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

    # --- enrollment -----------------------------------------------------------------------

    def start_enrollment(
        self, principal: Principal, name: str, cameo_id: str | None = None
    ) -> dict[str, Any]:
        from cameofarm.pipelines.enroll import EnrollmentError
        from cameofarm.pipelines.verify import start_session

        try:
            session = start_session(
                self.storage,
                self.config.enrollment,
                name=_text(name, "name"),
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
        from cameofarm.models.reference.face import DlibFaceAnalyzer
        from cameofarm.pipelines.enroll import EnrollmentError
        from cameofarm.pipelines.verify import finish_session

        self.get_session_owner_check(principal, session_id)
        log: list[str] = []
        try:
            record = finish_session(
                self.storage,
                DlibFaceAnalyzer(),
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

    # --- jobs -------------------------------------------------------------------------------

    def store_background(self, principal: Principal, data: bytes) -> dict[str, Any]:
        from cameofarm.service.jobs_api import SubmitError, store_background

        try:
            key = store_background(self.storage, data, principal.user)
        except SubmitError as exc:
            raise BadRequest(str(exc)) from None
        return {"background_id": key.rsplit("/", 1)[-1].removesuffix(".png")}

    def _quota(self, principal: Principal) -> None:
        limit = self.config.api.jobs_per_day
        since = time.time() - 86400
        times = jobs_submitted_since(self.db, principal.user, since)
        if len(times) >= limit:
            retry = max(1.0, times[-limit] + 86400 - time.time())
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
    ) -> dict[str, Any]:
        if not isinstance(cameo_ids, list) or not all(isinstance(c, str) for c in cameo_ids):
            raise BadRequest("cameo_ids must be a list of cameo ids")
        if not isinstance(script, str) or len(script) > MAX_SCRIPT_CHARS:
            raise BadRequest(f"script must be text of at most {MAX_SCRIPT_CHARS} characters")
        if not isinstance(priority, int) or not -10 <= priority <= 10:
            raise BadRequest("priority must be an integer from -10 to 10")
        key = None
        if background_id is not None:
            key = f"backgrounds/{principal.user}/{background_id}.png"
            try:
                if not self.storage.objects.exists(key):
                    raise NotFound(f"you have no background {background_id[:40]!r}")
            except ValueError:
                raise NotFound(f"you have no background {background_id[:40]!r}") from None
        if client_token is None or job_for_token(self.db, principal.user, client_token) is None:
            self._quota(principal)  # a replay of an accepted job is not a new job
        try:
            job = submit_job(
                self.db,
                self.config,
                cameo_ids=cameo_ids,
                script=script,
                tier=tier or next(iter(self.config.tiers)),
                customer=principal.user,
                priority=priority,
                background_key=key,
                client_token=client_token,
                background_digest=background_id,
            )
        except JobError as exc:
            raise _job_error(exc) from None
        return {**job.to_json(), "replayed": job.replayed}

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
            raise _job_error(exc) from None

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
        self.storage.objects.delete(self.db.transact(decide))
        return self._visible(principal, job_id).to_json()

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

    # --- audit ------------------------------------------------------------------------------

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

    def users(self, principal: Principal) -> dict[str, Any]:
        self._operator(principal)
        with self.db.session() as s:
            rows = s.scalars(select(UserRow).order_by(UserRow.id))
            return {
                "users": [
                    {"user": r.id, "org": r.org_id, "operator": bool(r.operator)} for r in rows
                ]
            }


def job_is_over(job: dict[str, Any]) -> bool:
    return JobStatus(job["status"]) in TERMINAL
