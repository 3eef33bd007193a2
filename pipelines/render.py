"""The render pipeline: script + cameo + tier in, a signed MP4 in the object store out."""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from cameofarm.actors.pools import OnDone, StagePools
from cameofarm.cameos import get_cameo
from cameofarm.configs import FarmConfig, StageName
from cameofarm.models.data import FrameSpec, ProvenanceClaim, SpeechTrack
from cameofarm.monitoring.timing import CallTiming, StageRecorder
from cameofarm.pipelines.audio_beds import bed_id
from cameofarm.pipelines.captions import CAPTION_TYPES, captions_for
from cameofarm.pipelines.dialogue import SPEAKERS, DialogueError, join_lines, parse_dialogue
from cameofarm.pipelines.face_quality import FaceMeasure, face_measure
from cameofarm.pipelines.prompt_scenes import ScenePrompt, generation_request
from cameofarm.pipelines.quality import EnrolledVoice, measure_dialogue, measure_voice
from cameofarm.pipelines.streaming import (
    FRAMES,
    Step,
    StreamCancelled,
    StreamProgress,
    stream_chunks,
)
from cameofarm.storage import FarmStorage
from cameofarm.storage.fetch import ObjectFetcher
from cameofarm.storage.keys import caption_keys

log = logging.getLogger("cameofarm.render")


def _say_if_failed(wrote: Future[None]) -> None:
    """A job's progress that could not be written is logged; the render goes on."""
    error = wrote.exception()
    if error is not None:
        log.warning("could not record the job's progress: %s", error)


T = TypeVar("T")
TAIL_SECONDS = 0.3  # a beat of silence after the last word
# How far along a job is while its slowest chunk is in each stage.
_FRACTION = {
    StageName.BASE_VIDEO: 0.15,
    StageName.FACE_SWAP: 0.3,
    StageName.LIP_SYNC: 0.6,
    StageName.COMPOSITE: 0.75,
}
OUTPUT_PREFIX = "outputs"


class RenderError(ValueError):
    """The job cannot be rendered as asked; the message says why and what to change."""


class JobCancelled(RuntimeError):
    """The job was cancelled (or its consent withdrawn) while it ran."""


@dataclass(frozen=True)
class RenderJob:
    """What the pipeline needs to know about one job."""

    job_id: str
    tier: str
    cameo_ids: tuple[str, ...]
    script: str
    background_key: str | None = None
    attempt: int = 1
    language: str = "en"
    scene_id: str | None = None  # a template scene to cast the cameo into
    prompt: dict[str, Any] | None = None  # a scene to generate (ScenePrompt.to_json())
    audio_bed: dict[str, Any] | None = None  # {"key", "level_db"}: music under the speech
    captions: str = "sidecar"  # or "burned": drawn into the frames as well


@dataclass(frozen=True)
class RenderResult:
    output_key: str
    frames: int
    seconds: float


Progress = Callable[[str, float], None]
# (stage, calls answered, calls the stage makes): each stage's own progress, call by call.
StageProgress = Callable[[str, int, int], None]
StillWanted = Callable[[], bool]
# Marks the job published with its output key, checking consent in the same transaction;
# raises when the job may no longer be published (the pipeline then removes the object).
# Publishes the written output with its quality report; its return value is ignored.
Finalize = Callable[[str, dict[str, Any]], object]


def _in_background(name: str, work: Callable[[], T]) -> Future[T]:
    """Run `work` on a thread of its own (its log records still name the job); its result,
    or its error, comes from the future."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return worker.submit(contextvars.copy_context().run, work)
    finally:
        worker.shutdown(wait=False)


def output_key(job_id: str) -> str:
    """Where a job's video is published. One key per job: a run that is repeated after a
    crash overwrites it rather than leaving a second copy."""
    return f"{OUTPUT_PREFIX}/{job_id}.mp4"


def _measured(pools: StagePools, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A voice report (quality.measure_voice or measure_dialogue) made in a process of its
    own: in the scheduler's, its CPU held up every job's chunks; on a voice replica, that
    replica's voice lines. One that cannot be made says why in the report; the render goes
    on."""
    try:
        return pools.elsewhere(fn, *args)
    except Exception as exc:
        log.warning("the speech could not be measured: %s", exc)
        return {"unmeasured": f"the speech could not be measured: {type(exc).__name__}: {exc}"}


def _scene(storage: FarmStorage, job: RenderJob, width: int, height: int) -> dict[str, Any]:
    """The template scene's fields the base-video stage needs (checked at submit; checked
    again here, since a job may wait in the queue while its config changes)."""
    from cameofarm.pipelines.scene_library import UnknownSceneError, fitting_scene
    from cameofarm.pipelines.scenes import SceneError

    try:
        with storage.db.session() as s:
            view = fitting_scene(s, job.scene_id or "", width, height)
    except (UnknownSceneError, SceneError) as exc:
        raise RenderError(str(exc)) from None
    return {
        "id": view.id,
        "name": view.name,
        "rights": view.rights,
        "clip_key": view.clip_key,
        "track_key": view.track_key,
        "fps": view.fps,
        "frame_count": view.frame_count,
        "actors": view.actors,
    }


def _face_reports(
    pools: StagePools,
    measures: list[FaceMeasure | None],
    sides: list[list[Any]],
    speech: SpeechTrack,
    fps: int,
) -> list[dict[str, Any]]:
    """Each cameo's face figures from its measurements of every chunk (each chunk's side
    answers, one per measured cameo in cast order), with the speech's loudness."""
    from cameofarm.pipelines.face_quality import FrameFaces, loudness, summarize

    reports, slot = [], 0
    for measure in measures:
        if measure is None:
            reports.append(
                {"unmeasured": "the cameo has no identity by the farm's primary face analyzer"}
            )
            continue
        faces = FrameFaces.join(pools.fetch([answers[slot] for answers in sides]))
        slot += 1
        times = np.asarray(faces.indices, np.float64) / fps
        loud = loudness(speech.samples, speech.sample_rate, times, measure.stride / fps)
        analyzer = measure.cameo.analyzer
        report = summarize(faces, analyzer, measure.cameo, measure.actor, fps, measure.stride, loud)
        reports.append(report.to_dict())
    return reports


def _read_prompt(prompt: dict[str, Any] | None) -> ScenePrompt | None:
    try:
        return ScenePrompt.from_json(prompt) if prompt is not None else None
    except (KeyError, ValueError) as exc:
        raise RenderError(f"the job's prompt cannot be read: {exc}") from None


def _generate_scene(
    config: FarmConfig,
    pools: StagePools,
    prompt: ScenePrompt,
    calls: list[CallTiming],
    priority: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Generate (or reuse) a prompt's scene on a base-video replica; return how to use it.
    Its call is timed as work before the chunks (chunk -1)."""
    request = generation_request(prompt, config.prompt_scenes)
    asked = time.time()
    made, timings = pools.map(
        StageName.BASE_VIDEO,
        "prompt_scene",
        [(request, config.enrollment.max_identity_distance)],
        priority=priority,
    )
    calls += [replace(t, submitted_at=asked, chunk=-1) for t in timings]
    generated: dict[str, Any] = pools.fetch(made)[0]
    return generated


def refuse_unrecognisable(face: dict[str, Any], floor: float) -> None:
    """Raise RenderError when too few frames show the cameo (its owner consented to their
    face, not to whatever the swap made)."""
    share = face.get("recognised")
    if floor > 0 and share is not None and share < floor:
        raise RenderError(
            f"the cameo is recognisable in only {share:.0%} of the output's frames "
            f"(consent.min_recognised_share is {floor:.0%}; median distance to the cameo "
            f"{face.get('to_cameo')}, to the scene's actor {face.get('to_actor')}); not "
            "published — try a scene whose actor faces the camera, closer up"
        )


def plan_frames(speech_seconds: float, fps: int, max_seconds: float) -> int:
    """Return how many frames the video needs, or raise if the speech is over the tier limit."""
    if speech_seconds > max_seconds:
        raise RenderError(
            f"the script takes {speech_seconds:.1f} s to speak; this tier allows {max_seconds:g} s"
            " — shorten the script"
        )
    return max(
        1, min(math.ceil((speech_seconds + TAIL_SECONDS) * fps), math.floor(max_seconds * fps))
    )


def chunk_ranges(n_frames: int, chunk: int) -> list[tuple[int, int, int]]:
    """Split [0, n_frames) into (index, start, count) chunks."""
    return [(i, s, min(chunk, n_frames - s)) for i, s in enumerate(range(0, n_frames, chunk))]


def render_job(
    job: RenderJob,
    config: FarmConfig,
    pools: StagePools,
    storage: FarmStorage,
    progress: Progress = lambda _s, _p: None,
    still_wanted: StillWanted = lambda: True,
    finalize: Finalize = lambda _key, _quality: None,
    stage_progress: StageProgress = lambda _s, _d, _t: None,
) -> RenderResult:
    """Run every stage of one job and publish its MP4; return where it was published."""
    backends = {stage.value: pool.backend for stage, pool in config.pools.items()}
    recorder = StageRecorder(storage.db, attempt=job.attempt, backends=backends)
    started = time.time()

    def checkpoint(stage: str, fraction: float) -> None:
        if not still_wanted():
            raise JobCancelled(f"job {job.job_id} was cancelled before {stage}")
        progress(stage, fraction)

    def counting(stage: StageName, total: int, before: int = 0) -> OnDone:
        """Report a stage's calls as they answer, after `before` made earlier in the stage."""
        stage_progress(stage.value, before, total)
        return lambda done: stage_progress(stage.value, before + done, total)

    # 1. Plan the output from the tier spec, for the cameo the scheduler dispatched (consent
    # was checked in that same transaction).
    tier = config.tier(job.tier)
    spec = FrameSpec(tier.width, tier.height, tier.fps, tier.video_bitrate_kbps)
    # At a replica, the calls of the tier with the shortest videos go first (a Plus chunk is
    # not stuck behind a Pro job's chunks), then those of the job that started first, then
    # its earlier chunks.
    order = (tier.max_seconds, started)
    cameos = [get_cameo(storage.db, cid) for cid in job.cameo_ids]
    cameo = cameos[0]
    scene = _scene(storage, job, spec.width, spec.height) if job.scene_id else None
    prompt = _read_prompt(job.prompt)
    if len(cameos) > 1 and (scene is None or scene["actors"] != len(cameos)):
        raise RenderError(
            f"{len(cameos)} cameos are cast onto the actors of a {len(cameos)}-actor template "
            "scene; name one with --scene"
        )
    try:  # two cameos speak a dialogue: "A: ... / B: ...", one line after the other
        lines = parse_dialogue(job.script, len(cameos))
    except DialogueError as exc:
        raise RenderError(str(exc)) from None
    speakers = [who for who, _ in lines]

    # 2. Voice: each line in its cameo's voice, with phoneme timings.
    checkpoint(StageName.VOICE, 0.05)
    with recorder.stage(job.job_id, job.tier, StageName.VOICE) as calls:
        emotion = prompt.emotion if prompt is not None else "neutral"
        handles, timings = pools.map(
            StageName.VOICE,
            "voice",
            [(text, cameos[who].assets_key, job.language, emotion) for who, text in lines],
            counting(StageName.VOICE, len(lines)),
            priority=(*order, -1),
        )
        calls += timings
    spoken: list[SpeechTrack] = pools.fetch(handles)
    quality: dict[str, Any] = {}
    fetcher = ObjectFetcher(config.storage, storage.data_dir)  # the measuring process's store
    if len(cameos) == 1:
        speech, speech_arg = spoken[0], handles[0]  # the stages read the stored track
        own: list[Any] = [handles[0]]

        def voice_reports() -> dict[str, Any]:
            voice = _measured(
                pools,
                measure_voice,
                fetcher,
                config.enrollment,
                handles[0],
                job.script,
                job.language,
                EnrolledVoice.of(cameo),
            )
            return {"voice": voice}

    else:  # the lines one after another; each actor's lips follow its own lines only
        speech, tracks = join_lines(spoken, speakers, len(cameos))
        speech_arg, own = speech, list(tracks)

        def voice_reports() -> dict[str, Any]:
            said = [" ".join(text for who, text in lines if who == k) for k in range(len(cameos))]
            voices = [
                _measured(
                    pools,
                    measure_voice,
                    fetcher,
                    config.enrollment,
                    tracks[k],
                    said[k],
                    job.language,
                    EnrolledVoice.of(c),
                )
                for k, c in enumerate(cameos)
            ]
            cast = [
                {"cameo": c.id, "speaker": SPEAKERS[k], "voice": voices[k]}
                for k, c in enumerate(cameos)
            ]
            apart = _measured(
                pools, measure_dialogue, fetcher, config.enrollment, speakers, *handles
            )
            return {"cast": cast, "dialogue": apart}

    # The speech's speaker similarity is measured (in a process of its own) while the chunks
    # render.
    voice_measured = _in_background(f"{job.job_id}-voice", voice_reports)
    # Captions from the words as spoken (WebVTT and SRT sidecars, referenced by the manifest).
    captions = captions_for(" ".join(text for _, text in lines), speech.words, job.language)
    n_frames = plan_frames(speech.duration, spec.fps, tier.max_seconds)
    chunks = chunk_ranges(n_frames, config.scheduler.chunk_frames)

    # 3. Base video's scene: a prompt's scene is generated first (once per prompt, seed and
    # model) and is then a template scene or a background.
    checkpoint(StageName.BASE_VIDEO, 0.15)
    background_key = job.background_key
    generating = int(prompt is not None)  # a prompt's scene is one call before the chunks
    generation: list[CallTiming] = []
    if prompt is not None:
        counting(StageName.BASE_VIDEO, len(chunks) + generating)
        generated = _generate_scene(config, pools, prompt, generation, (*order, -1))
        quality["scene"] = {
            k: generated.get(k) for k in ("kind", "generator", "seed", "prompt", "track_key")
        }
        if generated["kind"] == "template":
            scene = generated
        else:
            background_key = generated["background_key"]

    # The provenance claim the composite stage signs.
    extra = {}
    if scene is not None:  # the stand-in actor's rights, as their uploader attested them
        extra = {"scene": scene["id"], "scene_name": scene["name"], "scene_rights": scene["rights"]}
    if job.audio_bed is not None:
        extra["audio_bed"] = bed_id(job.audio_bed["key"])
    if prompt is not None:  # what the scene was generated from, and by which model
        made = quality["scene"]
        extra.update(prompt=made["prompt"], generator=made["generator"], seed=made["seed"])
    key = output_key(job.job_id)
    sidecars = caption_keys(key)
    burned = job.captions == "burned"
    # The manifest covers the sidecars' text, and says whether the frames show it too.
    extra["captions"] = {**sidecars, **captions.digests(), "burned": burned}
    claim = ProvenanceClaim(
        job.job_id, job.tier, job.cameo_ids, title=f"cameofarm {job.job_id}", extra=extra
    )

    # 4-6. Each chunk streams through base video (the template's clip with its tracked actor,
    # or the cameo presenting over a background), face swap and lip sync of each cameo onto
    # its actor (a dialogue's A onto the left), and encoding with the watermark (and burned
    # captions); a chunk goes on as soon as its stage is done.
    track = scene["track_key"] if scene is not None else None
    measures = [
        face_measure(config, storage, c, track, n_frames, actor, len(cameos))
        for actor, c in enumerate(cameos)
    ]

    def chain(index: int, first: int, count: int) -> list[Step]:
        if scene is not None:
            base = Step(StageName.BASE_VIDEO, "scene_video", (scene, spec, index, first, count))
        else:
            base = Step(
                StageName.BASE_VIDEO,
                "base_video",
                (cameo.recording_key, cameo.summary, background_key, spec, index, first, count),
            )
        swaps = [
            Step(StageName.FACE_SWAP, "face_swap", (FRAMES, c.assets_key, actor))
            for actor, c in enumerate(cameos)
        ]
        syncs = [
            Step(
                StageName.LIP_SYNC, "lip_sync", (FRAMES, own[actor], spec.fps, c.assets_key, actor)
            )
            for actor, c in enumerate(cameos)
        ]
        checks = [  # the composed frames measured against each cameo, beside the encoding
            Step(StageName.COMPOSITE, "measure_faces", (FRAMES, m), side=True)
            for m in measures
            if m is not None
        ]
        cues = (captions.cues,) if burned else ()
        encode = Step(StageName.COMPOSITE, "encode", (FRAMES, spec, *cues))
        return [base, *swaps, *syncs, *checks, encode]

    n = len(chunks)
    totals = {  # the streamed calls (a prompt scene's generation came before)
        StageName.BASE_VIDEO: n,
        StageName.FACE_SWAP: n * len(cameos),
        StageName.LIP_SYNC: n * len(cameos),
        # the chunks' encodings and face measurements, and one call assembles the segments
        StageName.COMPOSITE: n * (1 + sum(m is not None for m in measures)) + 1,
    }
    shown = [""]
    # The job's stage goes to the database from a thread of its own, in order: a chunk never
    # waits for that write (under load, waiting for it held every chunk of the job for
    # seconds between two stages).
    writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{job.job_id}-progress")

    def report(stage: StageName, done: int, total: int) -> None:
        before = generating if stage is StageName.BASE_VIDEO else 0
        stage_progress(stage.value, before + done, before + total)
        now = streaming.earliest_unfinished()
        if now is not None and now.value != shown[0]:  # the job is at its slowest chunk's stage
            shown[0] = now.value
            wrote = writes.submit(
                contextvars.copy_context().run, progress, now.value, _FRACTION[now]
            )
            wrote.add_done_callback(_say_if_failed)

    streaming = StreamProgress(totals, report)
    try:
        streamed = stream_chunks(
            pools,
            [chain(*c) for c in chunks],
            config.scheduler.chunks_in_flight,
            still_wanted,
            streaming,
            name=f"{job.job_id}-chunk",
            priority=order,
        )
    except StreamCancelled as exc:
        raise JobCancelled(f"job {job.job_id} was cancelled before {exc.stage.value}") from None
    finally:
        writes.shutdown(wait=True)
    by_stage = streamed.calls
    by_stage[StageName.BASE_VIDEO] = [*generation, *by_stage[StageName.BASE_VIDEO]]

    # 7. Composite: join the segments, mux the audio, sign C2PA and write the MP4 to the
    # store. The segments go from the encoding replicas to the assembling one by reference,
    # and the video from there to the store: never through this process. From here on, a
    # failure removes what was written.
    checkpoint(StageName.COMPOSITE, _FRACTION[StageName.COMPOSITE])
    written = [key]
    try:
        asked = time.time()
        made, timings = pools.map(
            StageName.COMPOSITE,
            "assemble",
            [(key, speech_arg, spec, claim, job.audio_bed, *streamed.outputs)],
            priority=(*order, n),
        )
        by_stage[StageName.COMPOSITE] += [replace(t, submitted_at=asked, chunk=n) for t in timings]
        streaming.one_more(StageName.COMPOSITE)
        # The calls' timings are written meanwhile, before the job is marked published.
        recording = _in_background(
            f"{job.job_id}-timings",
            lambda: [
                recorder.record_calls(job.job_id, job.tier, stage.value, stage_calls)
                for stage, stage_calls in by_stage.items()
            ],
        )
        # The manifest as a viewer reads it, against the farm's root; its id goes in the
        # results.
        signed: dict[str, Any] = pools.fetch(made)[0]
        if not signed["valid"]:
            raise RenderError(f"the signed output does not verify: {'; '.join(signed['problems'])}")
        quality["c2pa"] = {"manifest_id": signed["manifest_id"], "state": signed["state"]}

        # 8. The faces the viewer will see (measured in each chunk as it was composed); a
        # video in which one is not its cameo's is not published. The voice was measured
        # meanwhile.
        checkpoint("measure", 0.85)
        quality.update(voice_measured.result())
        faces = _face_reports(pools, measures, streamed.sides, speech, spec.fps)
        if len(cameos) == 1:
            quality["face"] = faces[0]
        else:
            for cast, face in zip(quality["cast"], faces, strict=True):
                cast["face"] = face
        for face in faces:
            refuse_unrecognisable(face, config.consent.min_recognised_share)

        # 9. Publish. The video is written first and the job marked published after, in one
        # transaction that checks consent (may_cast) a last time: if that refuses (say, the
        # verification lapsed a moment ago) the objects are removed and nothing is published.
        # A revocation cancels the job at once, which the checkpoint here sees.
        checkpoint("publish", 0.95)
        for fmt, text in (("vtt", captions.vtt), ("srt", captions.srt)):
            written.append(sidecars[fmt])
            storage.objects.put_bytes(sidecars[fmt], text.encode(), CAPTION_TYPES[fmt])
        recording.result()
        finalize(key, quality)
    except BaseException:
        for each in written:
            storage.objects.delete(each)
        raise
    progress("published", 1.0)
    return RenderResult(key, n_frames, time.time() - started)
