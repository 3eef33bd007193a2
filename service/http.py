"""The HTTP API: a FastAPI app (OpenAPI at /openapi.json, docs at /docs) served by Ray Serve.

Every route authenticates `Authorization: Bearer KEY`, is rate limited per key (token
bucket: `api.requests_per_minute`, `api.burst`; 429 with Retry-After), failed
authentications are limited per client address (`api.auth_failures_per_minute`,
`api.auth_failure_burst`), and each route calls one
`FarmAPI` method. JSON bodies over `api.max_body_bytes` and uploads over
`api.max_upload_bytes` answer 413. Errors are `{"error": "what was wrong and what to do"}`.

The rate limiter lives in the ingress replica's memory; the shipped deployment has one
replica. With several, divide the per-key figures by the replica count (or put a shared
limiter in front).
"""

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from cameofarm.cameos.accounts import HANDLE
from cameofarm.cameos.content import DISPLAY_TEXT_PATTERN
from cameofarm.configs import FarmConfig, StageName
from cameofarm.models.registry import voice_languages
from cameofarm.service.api_metrics import RequestMetrics, count_refusal
from cameofarm.service.areas.batches import BatchRefused
from cameofarm.service.farm_api import (
    ApiError,
    FarmAPI,
    Gone,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
)
from cameofarm.service.http_batches import add_batch_routes
from cameofarm.service.http_scenes import add_scene_routes
from cameofarm.service.ingress import BodyRefused, IngressGuard
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

API_TITLE = "cameofarm"
_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_HANDLE = HANDLE.pattern
_TEXT = DISPLAY_TEXT_PATTERN


class _Body(BaseModel):
    # Patterns are Python regular expressions, checked by Python's `re` as the farm's own rules
    # are (pydantic's default engine reads classes such as \w by other Unicode tables).
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


class NewUser(_Body):
    user: str = Field(pattern=_HANDLE, description="lowercase letters, digits, '_', '.', '-'")
    org: str = Field(pattern=_HANDLE)
    operator: bool = False


class NewKey(_Body):
    label: str = Field(default="key", min_length=1, max_length=200, pattern=_TEXT)
    expires_in_days: float | None = Field(
        default=None, gt=0, le=3650, description="The key stops working after this many days."
    )


class Webhook(_Body):
    url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\s/]+",
        description="http(s) URL to POST job events to; null turns webhooks off.",
    )


class Permission(_Body):
    level: Literal["only_me", "approved", "mutuals", "everyone"]


class Restrictions(_Body):
    restrictions: list[str] = Field(max_length=32)


class NewSession(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    cameo_id: str | None = Field(default=None, pattern=_ID, description="re-verify this cameo")


class PromptBody(_Body):
    text: str = Field(
        min_length=3,
        max_length=4000,
        description="The scene in words: where, who, what they do. A text-to-video model "
        "generates it (one person: the cameo is cast onto them; nobody: the cameo presents "
        "in front of it).",
    )
    framing: Literal["close-up", "medium", "wide"] = "medium"
    emotion: Literal["neutral", "joy", "sad"] = "neutral"
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Another seed, another take.")


class NewJob(_Body):
    cameo_ids: list[str] = Field(
        min_length=1,
        max_length=16,
        description="The cameos to cast: one, or two for a dialogue on a two-actor scene (the "
        "first speaks the A: lines and is cast onto the left actor, the second B:).",
    )
    script: str = Field(
        min_length=1,
        max_length=4000,
        pattern=r"[^\W_]",
        description="What the cameo says: at least one letter or digit. With two cameos, a "
        "dialogue: 'A: ... / B: ...', a line per turn.",
    )
    tier: str = Field(default="plus", max_length=32)
    priority: int = Field(default=0, ge=-10, le=10)
    client_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Idempotency token: resubmitting the same request returns the same job.",
    )
    background_id: str | None = Field(default=None, pattern=_ID)
    scene_id: str | None = Field(
        default=None,
        pattern=_ID,
        description="A template scene from your organisation's library: the cameo is cast onto "
        "its stand-in actor. Not together with background_id.",
    )
    audio_bed_id: str | None = Field(
        default=None,
        pattern=_ID,
        description="Music or ambience you uploaded (POST /v1/audio-beds), looped under the "
        "dialogue.",
    )
    bed_level_db: float | None = Field(
        default=None,
        ge=-40,
        le=-6,
        description="The audio bed's loudness relative to the speech, in dB (default -18).",
    )
    prompt: PromptBody | None = Field(
        default=None,
        description="A scene to generate (farms whose base_video pool has a text-to-video "
        "model). Not together with scene_id or background_id.",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$",
        description="The script's language (en, de, ja...); detected from the script if absent. "
        "A language the farm's voice does not speak is refused, listing those it does.",
    )
    captions: Literal["sidecar", "burned"] = Field(
        default="sidecar",
        description="Every video gets WebVTT and SRT captions beside it; 'burned' also draws "
        "them into the frames (scripts whose characters the caption font lacks, such as "
        "Japanese, are refused).",
    )


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong and what to do about it.")


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
# Every route can answer these; each carries an ErrorBody.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text, **extra}
    for code, text, extra in (
        (400, "The request is malformed or breaks a rule", {}),
        (401, "No API key, or one that is unknown, revoked or expired", {}),
        (403, "The caller may not do this", {}),
        (404, "No such resource (or none the caller may see)", {}),
        (405, "The path does not take this method (see Allow)", {}),
        (408, "The request body stalled or was too slow", {}),
        (409, "Conflicts with the resource's current state", {}),
        (410, "The resource was taken down or deleted", {}),
        (413, "The request body is over its limit", {}),
        (422, "The request does not validate", {}),
        (429, "Too many requests: wait Retry-After seconds", {"headers": _RETRY_AFTER}),
    )
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            kind: {"schema": {"type": "string", "format": "binary"}}
            for kind in ("application/octet-stream", "video/mp4", "image/png", "image/jpeg")
        },
    }
}


def _choice(name: str, values: list[str]) -> Any:
    """A string enum of configured names, for a schema that lists them."""
    return StrEnum(name, {v: v for v in values})


class TokenBuckets:
    """Per-key token buckets: `rate` tokens per second, at most `burst` saved up."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.state: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token; return 0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens, last = self.state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self.state[key] = (tokens - 1, now)
                return 0.0
            self.state[key] = (tokens, now)
            return (1 - tokens) / self.rate

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` has a token again (0 if it has one); spends nothing."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens, last = self.state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


def _error(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def build_app(config: FarmConfig, api_factory: Callable[[], FarmAPI] | None = None) -> FastAPI:
    """The FastAPI app; the FarmAPI (database, object store) opens on first use."""
    app = FastAPI(
        title=API_TITLE,
        version="1",
        description="Consent-based avatar video render farm: cameos, permissions, jobs, audit.",
        responses=ERROR_RESPONSES,
    )
    # Tiers and restrictions are the farm's configured ones: the schema lists exactly those.
    tier_name = _choice("TierName", list(config.tiers))
    spoken = _choice("Language", list(voice_languages(config.pools[StageName.VOICE].backend)))
    job_body: Any = create_model(
        "NewJob",
        __base__=NewJob,
        tier=(tier_name, Field(default=next(iter(config.tiers)))),
        language=(
            spoken | None,
            Field(
                default=None,
                description="The script's language, one the farm's voice speaks (listed); "
                "detected from the script if absent.",
            ),
        ),
    )
    restriction = _choice("Restriction", config.content.restrictable)
    restrictions_body: Any = create_model(
        "Restrictions",
        __base__=Restrictions,
        restrictions=(list[restriction], Field(max_length=32)),  # type: ignore[valid-type]
    )
    buckets = TokenBuckets(config.api.requests_per_minute, config.api.burst)
    failures = TokenBuckets(config.api.auth_failures_per_minute, config.api.auth_failure_burst)
    holder: dict[str, FarmAPI] = {}
    lock = threading.Lock()

    def farm() -> FarmAPI:
        with lock:
            if "api" not in holder:
                if api_factory is not None:
                    holder["api"] = api_factory()
                else:
                    from cameofarm.storage import open_farm_storage

                    holder["api"] = FarmAPI(config, open_farm_storage(config))
            return holder["api"]

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        response = _error(exc.status, exc.message, exc.retry_after)
        if isinstance(exc, BatchRefused):  # each bad row with its number and reason
            body = {"error": exc.message, "problems": [p.to_json() for p in exc.problems]}
            response = JSONResponse(body, status_code=exc.status)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code != 405:
            return _error(exc.status_code, str(exc.detail))
        # Starlette names only the first route's methods; a path may have several routes.
        allowed = sorted(
            {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
        )
        response = _error(405, f"{request.method} is not allowed here; use {', '.join(allowed)}")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(BodyRefused)
    async def _body_refused(_request: Request, exc: BodyRefused) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    # Limits apply before any route reads the body; outside them, every request is counted.
    app.add_middleware(IngressGuard, config=config)
    app.add_middleware(RequestMetrics, routes=app.router.routes)

    def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Any:
        # Failed authentications are limited per client address (a guesser's random keys
        # each have a fresh per-key bucket); past the limit no key is even looked up.
        address = request.client.host if request.client else "unknown"
        blocked = failures.wait(address)
        if blocked > 0:
            count_refusal("auth_failures")
            raise RateLimited(
                f"too many failed authentications from {address}; retry in {blocked:.0f} s",
                retry_after=blocked,
            )
        token = None
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        bucket = hashlib.sha256((token or "anonymous").encode()).hexdigest()
        wait = buckets.take(bucket)
        if wait > 0:
            count_refusal("key")
            raise RateLimited(f"rate limit: retry in {wait:.1f} s", retry_after=wait)
        try:
            if token is None:
                raise Unauthorized(
                    "send your API key as `Authorization: Bearer KEY`; an operator creates "
                    "users and keys (`cameofarm users add`)"
                )
            return farm().authenticate(token)
        except Unauthorized:
            failures.take(address)
            raise

    Caller = Annotated[Any, Depends(caller)]

    async def _spool(request: Request, suffix: str) -> Path:
        limit = config.api.max_upload_bytes
        fd, name = tempfile.mkstemp(prefix="cameofarm-upload-", suffix=suffix)
        path, size = Path(name), 0
        try:
            with open(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"upload is over the {limit} byte limit")
                    out.write(chunk)
            if size == 0:
                raise ApiError("the upload is empty: send the file as the request body")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    # --- health, users, keys -------------------------------------------------------------

    @app.get("/healthz", tags=["farm"])
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/v1/me", tags=["users"])
    def me(who: Caller) -> dict[str, Any]:
        return farm().whoami(who)

    @app.post("/v1/me/keys", tags=["users"], status_code=201)
    def new_key(who: Caller, body: NewKey) -> dict[str, Any]:
        return farm().issue_key(who, body.label, body.expires_in_days)

    @app.get("/v1/me/keys", tags=["users"])
    def my_keys(who: Caller) -> dict[str, Any]:
        return farm().list_keys(who)

    @app.get("/v1/users/{user}/keys", tags=["users"])
    def user_keys(who: Caller, user: Annotated[str, PathParam(pattern=_ID)]) -> dict[str, Any]:
        return farm().list_keys(who, user)

    @app.delete("/v1/keys/{key_id}", tags=["users"])
    def revoke_key(who: Caller, key_id: Annotated[str, PathParam(pattern=_ID)]) -> dict[str, Any]:
        return farm().revoke_key(who, key_id)

    @app.put("/v1/me/webhook", tags=["users"])
    def put_webhook(who: Caller, body: Webhook) -> dict[str, Any]:
        return farm().set_webhook(who, body.url)

    @app.get("/v1/me/webhook/deliveries", tags=["users"])
    def webhook_deliveries(
        who: Caller, job_id: Annotated[str | None, Query(pattern=_ID)] = None
    ) -> dict[str, Any]:
        return farm().webhook_deliveries(who, job_id)

    @app.get("/v1/users", tags=["users"])
    def users(who: Caller) -> dict[str, Any]:
        return farm().users(who)

    @app.post("/v1/users", tags=["users"], status_code=201)
    def new_user(who: Caller, body: NewUser) -> dict[str, Any]:
        return farm().create_user(who, body.user, body.org, body.operator)

    @app.post("/v1/follows/{user}", tags=["users"])
    def follow(who: Caller, user: str) -> dict[str, Any]:
        return farm().follow(who, user)

    @app.delete("/v1/follows/{user}", tags=["users"])
    def unfollow(who: Caller, user: str) -> dict[str, Any]:
        return farm().unfollow(who, user)

    # --- cameos ----------------------------------------------------------------------------

    @app.get("/v1/cameos", tags=["cameos"])
    def cameos(who: Caller) -> dict[str, Any]:
        return farm().list_cameos(who)

    @app.get("/v1/cameos/{cameo_id}", tags=["cameos"])
    def cameo(who: Caller, cameo_id: str) -> dict[str, Any]:
        return farm().get_cameo(who, cameo_id)

    @app.put("/v1/cameos/{cameo_id}/permission", tags=["cameos"])
    def permission(who: Caller, cameo_id: str, body: Permission) -> dict[str, Any]:
        return farm().set_permission(who, cameo_id, body.level)

    @app.put("/v1/cameos/{cameo_id}/approved/{user}", tags=["cameos"])
    def approve(who: Caller, cameo_id: str, user: str) -> dict[str, Any]:
        return farm().approve(who, cameo_id, user)

    @app.delete("/v1/cameos/{cameo_id}/approved/{user}", tags=["cameos"])
    def unapprove(who: Caller, cameo_id: str, user: str) -> dict[str, Any]:
        return farm().unapprove(who, cameo_id, user)

    @app.put("/v1/cameos/{cameo_id}/restrictions", tags=["cameos"])
    def restrict(who: Caller, cameo_id: str, body: restrictions_body) -> dict[str, Any]:
        return farm().set_restrictions(who, cameo_id, [str(r) for r in body.restrictions])

    @app.post("/v1/cameos/{cameo_id}/revoke", tags=["cameos"])
    def revoke(who: Caller, cameo_id: str) -> dict[str, Any]:
        return farm().revoke_cameo(who, cameo_id)

    @app.delete("/v1/cameos/{cameo_id}", tags=["cameos"])
    def delete(who: Caller, cameo_id: str) -> dict[str, Any]:
        return farm().delete_cameo(who, cameo_id)

    @app.get("/v1/cameos/{cameo_id}/purge", tags=["cameos"])
    def purge(who: Caller, cameo_id: str) -> dict[str, Any]:
        return farm().purge_status(who, cameo_id)

    @app.get("/v1/cameos/{cameo_id}/scan", tags=["cameos"])
    def scan(who: Caller, cameo_id: str) -> dict[str, Any]:
        return farm().scan_cameo(who, cameo_id)

    @app.get("/v1/uses", tags=["cameos"])
    def uses(
        who: Caller, cameo_id: Annotated[str | None, Query(pattern=_ID)] = None
    ) -> dict[str, Any]:
        """The owner's view: every video casting your cameos, drafts and others' included."""
        return farm().owner_view(who, cameo_id)

    # --- enrollment --------------------------------------------------------------------------

    @app.post("/v1/enrollment/sessions", tags=["enrollment"], status_code=201)
    def start_session(who: Caller, body: NewSession) -> dict[str, Any]:
        return farm().start_enrollment(who, body.name, body.cameo_id)

    def _id_photo_path(session_id: str) -> Path:
        safe = hashlib.sha256(session_id.encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / f"cameofarm-idphoto-{safe}.img"

    @app.put(
        "/v1/enrollment/sessions/{session_id}/id-photo",
        tags=["enrollment"],
        openapi_extra=UPLOAD_BODY,
    )
    async def id_photo(who: Caller, session_id: str, request: Request) -> dict[str, Any]:
        """Upload an ID photo (raw body) that the recording's face must match."""
        farm().get_session_owner_check(who, session_id)
        path = await _spool(request, ".img")
        path.replace(_id_photo_path(session_id))
        return {"session_id": session_id, "id_photo": True}

    @app.post(
        "/v1/enrollment/sessions/{session_id}/recording",
        tags=["enrollment"],
        openapi_extra=UPLOAD_BODY,
    )
    async def recording(who: Caller, session_id: str, request: Request) -> dict[str, Any]:
        """Upload the recording (raw MP4 body); verifies liveness and enrolls the cameo."""
        import asyncio

        farm().get_session_owner_check(who, session_id)
        video = await _spool(request, ".mp4")
        photo = _id_photo_path(session_id)
        try:
            return await asyncio.to_thread(
                farm().finish_enrollment,
                who,
                session_id,
                video,
                photo if photo.is_file() else None,
            )
        finally:
            video.unlink(missing_ok=True)
            photo.unlink(missing_ok=True)

    # --- jobs --------------------------------------------------------------------------------

    @app.post("/v1/backgrounds", tags=["jobs"], status_code=201, openapi_extra=UPLOAD_BODY)
    async def background(who: Caller, request: Request) -> dict[str, Any]:
        """Upload a background for presenters (raw body: a PNG/JPEG image or an MP4/MOV/WebM
        video of 1-60 s, looped to the speech) for later jobs. It must show no face."""
        import asyncio

        path = await _spool(request, ".img")
        try:
            return await asyncio.to_thread(farm().store_background, who, path.read_bytes())
        finally:
            path.unlink(missing_ok=True)

    @app.post("/v1/audio-beds", tags=["jobs"], status_code=201, openapi_extra=UPLOAD_BODY)
    async def audio_bed(who: Caller, request: Request) -> dict[str, Any]:
        """Upload music or ambience to mix under later jobs' dialogue (raw body: WAV, MP3,
        AAC, FLAC or OGG; 1 s to 10 min; refused if it carries speech)."""
        import asyncio

        path = await _spool(request, ".audio")
        try:
            return await asyncio.to_thread(farm().store_audio_bed, who, path.read_bytes())
        finally:
            path.unlink(missing_ok=True)

    add_scene_routes(app, farm, Caller, _spool)
    add_batch_routes(app, farm, Caller, _spool)

    @app.post(
        "/v1/jobs",
        tags=["jobs"],
        status_code=201,
        responses={200: {"description": "The same request was made before: its job"}},
    )
    def submit(
        who: Caller,
        body: job_body,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=128)] = None,
    ) -> Any:
        out = farm().submit(
            who,
            body.cameo_ids,
            body.script,
            str(body.tier),
            body.priority,
            body.client_token or idempotency_key,
            body.background_id,
            str(body.language) if body.language is not None else None,
            body.scene_id,
            body.prompt.model_dump() if body.prompt is not None else None,
            body.audio_bed_id,
            body.bed_level_db,
            body.captions,
        )
        return JSONResponse(out, status_code=200 if out.get("replayed") else 201)

    @app.get("/v1/jobs", tags=["jobs"])
    def jobs(who: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return farm().list_jobs(who, limit)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job(who: Caller, job_id: str) -> dict[str, Any]:
        """The job with its status, stage and progress (0..1)."""
        return farm().get_job(who, job_id)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"])
    def job_events(who: Caller, job_id: str) -> dict[str, Any]:
        return farm().job_history(who, job_id)

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel(who: Caller, job_id: str) -> dict[str, Any]:
        return farm().cancel(who, job_id)

    @app.get("/v1/jobs/{job_id}/captions", tags=["jobs"])
    def captions(
        who: Caller, job_id: str, format: Annotated[Literal["vtt", "srt"], Query()] = "vtt"
    ) -> Response:
        """The published video's captions: WebVTT (text/vtt) or SRT."""
        media = {"vtt": "text/vtt", "srt": "application/x-subrip"}[format]
        return Response(farm().captions(who, job_id, format), media_type=f"{media}; charset=utf-8")

    @app.get("/v1/jobs/{job_id}/download", tags=["jobs"])
    def download(who: Caller, job_id: str, request: Request) -> dict[str, Any]:
        """A presigned URL for the published MP4, valid `api.download_url_seconds`."""
        return farm().download(who, job_id, str(request.base_url))

    @app.post("/v1/jobs/{job_id}/takedown", tags=["jobs"])
    def takedown(who: Caller, job_id: str) -> dict[str, Any]:
        """Remove a published video (its customer, or an owner of a cameo in it)."""
        return farm().takedown(who, job_id)

    @app.get("/v1/files/{key:path}", tags=["jobs"], include_in_schema=False)
    def file(key: str, expires: int, sig: str) -> Any:
        api = farm()
        api.check_download(key, expires, sig)
        try:
            present = api.storage.objects.exists(key)
        except ValueError:  # not a key of this store (e.g. "../"): nothing to serve
            raise NotFound("no such file") from None
        if not present:
            raise Gone("the video is no longer published")
        return FileResponse(api.storage.objects.locate(key), media_type="video/mp4")

    # --- audit ------------------------------------------------------------------------------

    @app.get("/v1/audit", tags=["audit"])
    def audit_log(
        who: Caller,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        return farm().audit_log(who, after, limit)

    @app.get("/v1/audit/verify", tags=["audit"])
    def audit_verify(who: Caller) -> dict[str, Any]:
        return farm().audit_verify(who)

    # --- the farm (operators) ---------------------------------------------------------------

    @app.get("/v1/farm", tags=["farm"])
    def farm_view(
        who: Caller, window_s: Annotated[float, Query(ge=10, le=86_400)] = 300.0
    ) -> dict[str, Any]:
        """Tiers, pools, replicas and running jobs with their stages (`cameofarm top`)."""
        return farm().farm_view(who, window_s)

    return app
