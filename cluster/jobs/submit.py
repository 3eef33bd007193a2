"""Taking a render request: validation, consent, queue limits and idempotent client tokens."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from cameofarm.cameos import UnknownCameoError
from cameofarm.cameos.content import ContentError, check_script
from cameofarm.cameos.permissions import ConsentError, check_cast_count, may_cast
from cameofarm.cluster.jobs.model import IdempotencyConflict, JobError, JobStatus, JobView
from cameofarm.cluster.jobs.transition import transition_job
from cameofarm.configs import FarmConfig, StageName
from cameofarm.models.reference.voice import clean_script
from cameofarm.models.registry import SCENE_GENERATORS
from cameofarm.pipelines.audio_beds import LEVEL_RANGE
from cameofarm.pipelines.captions import CAPTION_MODES, unburnable
from cameofarm.pipelines.dialogue import LINE_GAP, dialogue_script, parse_dialogue
from cameofarm.pipelines.prompt_scenes import ScenePrompt
from cameofarm.pipelines.scene_library import UnknownSceneError, scene_for_job
from cameofarm.pipelines.scenes import SceneError
from cameofarm.storage.db import Database, JobRow
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

# Words per second of a brisk speaker: a cheap early refusal of scripts far over a tier's limit
# (before anything is synthesised).
_MAX_WORDS_PER_SECOND = 4.0


def request_hash(
    cameo_ids: Sequence[str],
    script: str,
    tier: str,
    priority: int,
    bg: str | None,
    language: str | None = None,
    scene: str | None = None,
    prompt: dict[str, object] | None = None,
    audio_bed: dict[str, object] | None = None,
    captions: str = "sidecar",
) -> str:
    """A digest of what a submit asked for: a reused client token must ask the same."""
    asked: list[object] = [list(cameo_ids), script, tier, priority, bg]
    if language is not None or scene is not None or prompt is not None:  # older digests stay
        asked.append(language)
    if scene is not None or prompt is not None:
        asked.append(scene)
    if prompt is not None or audio_bed is not None:
        asked.append(prompt)
    if audio_bed is not None or captions != "sidecar":
        asked.append(audio_bed)
    if captions != "sidecar":
        asked.append(captions)
    body = json.dumps(asked, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _too_long(words_or_seconds: str, tier: str, config: FarmConfig) -> JobError:
    """Refuse a script over a tier's length; suggest a longer tier only if there is one."""
    limit = config.tier(tier).max_seconds
    longer = [name for name, t in config.tiers.items() if t.max_seconds > limit]
    advice = f"shorten it or choose a longer tier ({', '.join(longer)})" if longer else "shorten it"
    return JobError(
        f"the script {words_or_seconds}; {tier} videos are at most {limit:g} s — {advice}"
    )


def speech_plan(
    script: str, language: str | None, tier: str, config: FarmConfig, pauses: float = 0.0
) -> tuple[str, float]:
    """The script's language (declared, or detected) and how long the farm's voice takes to
    speak it (plus `pauses` seconds between a dialogue's lines), synthesised once here the
    way the render will; raise JobError if that voice cannot speak the language, would spell
    words out letter by letter, or runs over the tier's length."""
    from cameofarm.models.reference.languages import detect_language, name
    from cameofarm.models.reference.unit_voice import base_speech
    from cameofarm.models.reference.voice import plain_speech, spelled_out
    from cameofarm.models.registry import voice_languages

    code = (language or detect_language(script)).strip().lower()
    backend = config.pools[StageName.VOICE].backend
    supported = voice_languages(backend)
    how = "declared" if language else "detected"
    if code not in supported:
        listing = ", ".join(f"{c} ({name(c)})" if name(c) != c else c for c in supported)
        raise JobError(
            f"the script is in {name(code)} ({code}, {how}); the farm's {backend} voice "
            f"speaks: {listing} — translate the script or declare its language with --language"
        )
    try:
        speech = plain_speech(script, code)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    unreadable = spelled_out(speech)
    if unreadable:
        raise JobError(
            f"the {backend} voice cannot read {', '.join(unreadable)[:120]} in {name(code)} "
            f"({code}, {how}): it would spell the characters out one by one. Write those words "
            f"in a script {name(code)} voices read (e.g. Japanese in kana), or declare another "
            "language with --language"
        )
    if backend == "reference":  # its base voice may be flite's, whose length differs
        speech = base_speech(script, code, timed=False)
    seconds = speech.duration + pauses
    if seconds > config.tier(tier).max_seconds:
        raise _too_long(f"takes {seconds:.1f} s to speak", tier, config)
    return code, seconds


def _by_token(session: Session, customer: str, token: str) -> JobRow | None:
    query = select(JobRow).where(JobRow.customer == customer, JobRow.client_token == token)
    return session.scalars(query).first()


def job_for_token(db: Database, customer: str, token: str) -> JobView | None:
    """The job a customer already submitted with this client token, if any."""
    with db.session() as s:
        row = _by_token(s, customer, token)
        return JobView.from_row(row) if row is not None else None


@dataclass(frozen=True)
class JobRequest:
    """What a customer asks to render, as `submit_job` takes it (see there)."""

    cameo_ids: list[str]
    script: str
    tier: str
    customer: str
    priority: int = 0
    background_key: str | None = None
    client_token: str | None = None
    background_digest: str | None = None
    language: str | None = None
    scene_id: str | None = None
    org: str | None = None
    prompt: ScenePrompt | None = None
    audio_bed: dict[str, object] | None = None
    captions: str = "sidecar"  # or "burned" (see CAPTION_MODES)


@dataclass(frozen=True)
class JobPlan:
    """A render request that passed every check (`plan_job`), ready to store as a job."""

    cameo_ids: tuple[str, ...]
    script: str  # cleaned; a dialogue as "A: ... / B: ..."
    tier: str
    customer: str
    priority: int
    background_key: str | None
    client_token: str | None
    request_hash: str
    language: str
    speech_seconds: float
    scene_id: str | None
    prompt: dict[str, object] | None
    audio_bed: dict[str, object] | None
    captions: str
    # For the checks that read the database (content, consent, scene): who asks, and where.
    org: str | None = None
    prompt_text: str | None = None


def _plan_request(config: FarmConfig, request: JobRequest) -> JobPlan:
    """Every check that needs no database: tier, cast, script, settings, speech length."""
    r = request
    cameo_ids, script, tier, prompt, audio_bed = (
        r.cameo_ids,
        r.script,
        r.tier,
        r.prompt,
        r.audio_bed,
    )
    language, scene_id, background_key = r.language, r.scene_id, r.background_key
    try:
        tier_cfg = config.tier(tier)
    except KeyError as exc:
        raise JobError(str(exc.args[0])) from None
    if not cameo_ids:
        raise JobError("name at least one cameo (--cameo ID)")
    try:
        check_cast_count(cameo_ids, config)
    except ConsentError as exc:
        raise JobError(str(exc), "forbidden") from exc
    try:  # two cameos speak a dialogue, stored as "A: ... / B: ..." (see pipelines/dialogue)
        lines = [(who, clean_script(text)) for who, text in parse_dialogue(script, len(cameo_ids))]
    except ValueError as exc:
        raise JobError(str(exc)) from None
    script = dialogue_script(lines) if len(cameo_ids) > 1 else lines[0][1]
    words = len(script.split())
    if words > tier_cfg.max_seconds * _MAX_WORDS_PER_SECOND:
        raise _too_long(f"has {words} words", tier, config)
    if len(cameo_ids) > 1 and scene_id is None:
        raise JobError(
            f"a video of {len(cameo_ids)} cameos casts each onto a stand-in actor of a "
            f"{len(cameo_ids)}-actor template scene: name one with --scene (add it with "
            f"`cameofarm scenes add CLIP --actors {len(cameo_ids)}`)"
        )
    if language is not None and not (0 < len(language) <= 16 and language.isascii()):
        raise JobError("language must be a language code such as en, de or ja")
    settings = [scene_id is not None, background_key is not None, prompt is not None]
    if sum(settings) > 1:
        raise JobError(
            "name one of a scene (the cameo is cast into its actor), a prompt (a scene is "
            "generated for it) or a background (the cameo presents over it), not several"
        )
    base_video = config.pools[StageName.BASE_VIDEO].backend
    if prompt is not None and base_video not in SCENE_GENERATORS:
        raise JobError(
            f"this farm cannot generate scenes from prompts: its base_video pool runs the "
            f"{base_video} backend, which has no text-to-video model (an operator sets "
            "backend: diffusers with models: {pipeline: NAME}); use --scene or --background"
        )
    asked_prompt = prompt.to_json() if prompt is not None else None
    if audio_bed is not None:
        level = audio_bed.get("level_db")
        low, high = LEVEL_RANGE
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, float))
            or not low <= level <= high
        ):
            raise JobError(f"the audio bed's level must be {low:g} to {high:g} dB under the speech")
    if r.captions not in CAPTION_MODES:
        raise JobError(f"captions must be one of {', '.join(CAPTION_MODES)}")
    spoken = " ".join(text for _, text in lines)
    if r.captions == "burned" and (missing := unburnable(spoken)):
        raise JobError(
            f"burned-in captions cannot show {' '.join(missing[:12])} (their font has no "
            "glyphs for them); the video still gets WebVTT and SRT captions, which players "
            "draw in their own fonts — submit without burned captions"
        )
    digest = request_hash(
        cameo_ids,
        script,
        tier,
        r.priority,
        r.background_digest,
        language,
        scene_id,
        asked_prompt,
        audio_bed,
        r.captions,
    )
    code, seconds = speech_plan(spoken, language, tier, config, LINE_GAP * (len(lines) - 1))
    if r.client_token is not None and not (0 < len(r.client_token) <= 128):
        raise JobError("client_token must be 1-128 characters")
    return JobPlan(
        cameo_ids=tuple(cameo_ids),
        script=script,
        tier=tier,
        customer=r.customer,
        priority=r.priority,
        background_key=background_key,
        client_token=r.client_token,
        request_hash=digest,
        language=code,
        speech_seconds=round(seconds, 3),
        scene_id=scene_id,
        prompt=asked_prompt,
        audio_bed=audio_bed,
        captions=r.captions,
        org=r.org,
        prompt_text=prompt.text if prompt is not None else None,
    )


def _check_access(s: Session, plan: JobPlan, config: FarmConfig) -> None:
    """The checks that read the database: content rules, consent, the scene."""
    check_script(plan.script, config.content)
    if plan.prompt_text is not None:  # the scene is held to the same rules as the words
        check_script(plan.prompt_text, config.content, "prompt")
    cast_text = plan.script if plan.prompt_text is None else f"{plan.script}\n{plan.prompt_text}"
    may_cast(s, plan.customer, list(plan.cameo_ids), cast_text, config)
    if plan.scene_id is not None:
        tier = config.tier(plan.tier)
        view = scene_for_job(s, plan.org or plan.customer, plan.scene_id, tier.width, tier.height)
        if view.actors != len(plan.cameo_ids):
            n = len(plan.cameo_ids)
            raise JobError(
                f"scene {plan.scene_id} has {view.actors} stand-in actor"
                f"{'s' if view.actors > 1 else ''} and this video casts "
                f"{n} cameo{'s' if n > 1 else ''}: each actor "
                "is cast by one cameo — name as many cameos as the scene has actors"
            )


@contextmanager
def _as_job_errors() -> Iterator[None]:
    """The domain's refusals as JobError, with the kind the API maps to a status."""
    try:
        yield
    except ConsentError as exc:
        raise JobError(str(exc), "forbidden") from exc
    except UnknownCameoError as exc:
        raise JobError(str(exc), "not_found") from exc
    except ContentError as exc:
        raise JobError(str(exc)) from exc
    except UnknownSceneError as exc:
        raise JobError(str(exc), "not_found") from exc
    except SceneError as exc:
        raise JobError(str(exc)) from exc


def check_access(s: Session, plan: JobPlan, config: FarmConfig) -> None:
    """Content, consent and scene checks of a plan in the caller's session; JobError."""
    with _as_job_errors():
        _check_access(s, plan, config)


def plan_job(db: Database, config: FarmConfig, request: JobRequest) -> JobPlan:
    """Check a render request as `submit_job` would, storing nothing; return the plan
    `store_planned` stores, or raise JobError saying what was wrong."""
    plan = _plan_request(config, request)
    with db.session() as s:
        check_access(s, plan, config)
    return plan


def queue_room(s: Session, config: FarmConfig, tier: str) -> int:
    """How many more jobs the tier's queue takes (tiers.*.max_queued)."""
    depth = (
        s.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.tier == tier, JobRow.status == JobStatus.QUEUED.value)
        )
        or 0
    )
    return max(0, config.tier(tier).max_queued - depth)


def store_planned(s: Session, plan: JobPlan, now: float | None = None) -> JobRow:
    """Store a checked request as a QUEUED job, in the caller's transaction."""
    row = JobRow(
        id="job_" + uuid.uuid4().hex[:12],
        tier=plan.tier,
        status="",
        customer=plan.customer,
        priority=plan.priority,
        cameo_ids=list(plan.cameo_ids),
        script=plan.script,
        background_key=plan.background_key,
        submitted_at=now or time.time(),
        attempts=0,
        progress=0.0,
        stage="",
        client_token=plan.client_token,
        request_hash=plan.request_hash,
        language=plan.language,
        speech_seconds=plan.speech_seconds,
        scene_id=plan.scene_id,
        prompt=plan.prompt,
        audio_bed=plan.audio_bed,
        captions=plan.captions,
    )
    s.add(row)
    s.flush()
    transition_job(s, row, JobStatus.QUEUED, "submitted", row.submitted_at, plan.customer)
    return row


def submit_job(
    db: Database,
    config: FarmConfig,
    *,
    cameo_ids: list[str],
    script: str,
    tier: str,
    customer: str,
    priority: int = 0,
    background_key: str | None = None,
    client_token: str | None = None,
    background_digest: str | None = None,
    language: str | None = None,
    scene_id: str | None = None,
    org: str | None = None,
    prompt: ScenePrompt | None = None,
    audio_bed: dict[str, object] | None = None,
    captions: str = "sidecar",
) -> JobView:
    """`submit_request` with the request's fields as keywords."""
    return submit_request(
        db,
        config,
        JobRequest(
            cameo_ids,
            script,
            tier,
            customer,
            priority,
            background_key,
            client_token,
            background_digest,
            language,
            scene_id,
            org,
            prompt,
            audio_bed,
            captions,
        ),
    )


def submit_request(db: Database, config: FarmConfig, request: JobRequest) -> JobView:
    """Validate a render request (tier, script, content policy, consent) and store it QUEUED.

    With a client token, a repeat of the same request returns the first job (replayed=True);
    the same token with a different request raises IdempotencyConflict. Raises JobError
    (ConsentError/ContentError/UnknownCameoError wrapped) saying what was wrong.
    """
    customer, client_token, tier = request.customer, request.client_token, request.tier
    plan = _plan_request(config, request)
    try:
        with _as_job_errors(), db.session() as s:
            if client_token is not None:
                existing = _by_token(s, customer, client_token)
                if existing is not None:
                    return _replay(existing, plan.request_hash, client_token)
            _check_access(s, plan, config)
            if queue_room(s, config, tier) < 1:
                depth = config.tier(tier).max_queued
                raise JobError(f"the {tier} queue is full ({depth} jobs); try again later")
            return JobView.from_row(store_planned(s, plan))
    except IntegrityError:
        # A concurrent submit with the same client token won the race: answer with its job.
        with db.session() as s:
            existing = _by_token(s, customer, client_token or "")
            if existing is None:
                raise
            return _replay(existing, plan.request_hash, client_token or "")


def _replay(row: JobRow, digest: str, token: str) -> JobView:
    if row.request_hash != digest:
        raise IdempotencyConflict(
            f"client token {token[:40]!r} was already used for job {row.id} with a different "
            "request; use a new token for a new request"
        )
    view = JobView.from_row(row)
    return JobView(**{**view.__dict__, "replayed": True})
