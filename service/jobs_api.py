"""Submit and follow render jobs in-process: shared by the demo, the benchmark and the API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from cameofarm.cluster.jobs import TERMINAL, JobError, JobView, get_job, submit_job
from cameofarm.configs import FarmConfig
from cameofarm.models.media import is_video_header
from cameofarm.pipelines.prompt_scenes import ScenePrompt
from cameofarm.storage import FarmStorage

MAX_BACKGROUND_BYTES = 25 * 1024 * 1024  # an image
MAX_BACKGROUND_VIDEO_BYTES = 200 * 1024 * 1024
MAX_BACKGROUND_SIDE = 8192


class SubmitError(ValueError):
    """A render request was refused; the message says what to change."""


class WaitError(RuntimeError):
    """A job did not end in time."""


def _refuse_faces(found: int, where: str) -> None:
    if found:
        raise SubmitError(
            f"the background shows {found} face(s){where}; real people enter a video only as "
            "cast cameos, with their consent — use a background without people, or a template "
            "scene whose actor the cameo replaces (`cameofarm scenes add`)"
        )


def _store_background_video(
    storage: FarmStorage, data: bytes, owner: str, config: FarmConfig
) -> str:
    """Check a background video (decodes whole, 1-60 s, no face on any sampled frame) and
    store it as given; return the key."""
    import tempfile

    from cameofarm.models.media import MediaError, read_frames
    from cameofarm.pipelines.extractors import primary_analyzer
    from cameofarm.pipelines.scenes import SceneError, check_clip

    with tempfile.TemporaryDirectory(prefix="cameofarm-bg-") as tmp:
        path = Path(tmp) / "background.mp4"
        path.write_bytes(data)
        try:
            info = check_clip(path, "the background video")
        except SceneError as exc:
            raise SubmitError(str(exc)) from None
        if max(info.width, info.height) > MAX_BACKGROUND_SIDE or min(info.width, info.height) < 16:
            raise SubmitError(
                f"the background video is {info.width}x{info.height}; use 16..{MAX_BACKGROUND_SIDE}"
                " px sides"
            )
        analyzer = primary_analyzer(config, storage)
        probes = sorted({round(i * (info.frame_count - 1) / 7) for i in range(8)})
        try:
            sampled = read_frames(path, probes)
        except MediaError as exc:
            raise SubmitError(f"the background video cannot be decoded: {exc}") from None
        for k, frame in sorted(sampled.items()):
            _refuse_faces(len(analyzer.detect(frame)), f" at {k / info.fps:.1f} s")
        key = f"backgrounds/{owner}/bg_{uuid.uuid4().hex[:12]}.mp4"
        storage.objects.put_file(key, path, "video/mp4")
    return key


def store_background(storage: FarmStorage, data: bytes, owner: str, config: FarmConfig) -> str:
    """Check an uploaded background — an image (PNG/JPEG) or a video (MP4/MOV/WebM) — which
    must show no face, store it under its owner (images as PNG); return the key."""
    if len(data) > MAX_BACKGROUND_VIDEO_BYTES:
        raise SubmitError(
            f"the background is {len(data) >> 20} MiB; the limit is 25 MiB for an image and "
            f"{MAX_BACKGROUND_VIDEO_BYTES >> 20} MiB for a video"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        if is_video_header(data[:12]):
            return _store_background_video(storage, data, owner, config)
        raise SubmitError(
            "the background is not an image (PNG/JPEG) or a video (MP4/MOV/WebM) it can decode"
        )
    if len(data) > MAX_BACKGROUND_BYTES:
        raise SubmitError(f"the background is {len(data) >> 20} MiB; the limit is 25 MiB")
    h, w = image.shape[:2]
    if max(h, w) > MAX_BACKGROUND_SIDE or min(h, w) < 16:
        raise SubmitError(f"the background is {w}x{h}; use 16..{MAX_BACKGROUND_SIDE} px sides")
    from cameofarm.pipelines.extractors import primary_analyzer

    faces = primary_analyzer(config, storage).detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    _refuse_faces(len(faces), "")
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise SubmitError("the background could not be re-encoded")
    key = f"backgrounds/{owner}/bg_{uuid.uuid4().hex[:12]}.png"
    storage.objects.put_bytes(key, png.tobytes(), "image/png")
    return key


def _store_background(storage: FarmStorage, path: str, owner: str, config: FarmConfig) -> str:
    try:
        return store_background(storage, Path(path).read_bytes(), owner, config)
    except SubmitError as exc:
        raise SubmitError(f"{path}: {exc}") from None


def submit_render(
    config: FarmConfig,
    storage: FarmStorage,
    cameo_ids: list[str],
    script: str,
    tier: str,
    customer: str,
    priority: int = 0,
    background: str | None = None,
    scene_id: str | None = None,
    prompt: ScenePrompt | None = None,
    audio_bed: dict[str, object] | None = None,
) -> JobView:
    """Validate and queue one render job; nothing is stored if it is refused. A scene is
    looked up in the library of the organisation named like the customer (the demo's)."""
    key = _store_background(storage, background, customer, config) if background else None
    try:
        return submit_job(
            storage.db,
            config,
            cameo_ids=cameo_ids,
            script=script,
            tier=tier,
            customer=customer,
            priority=priority,
            background_key=key,
            scene_id=scene_id,
            org=customer,
            prompt=prompt,
            audio_bed=audio_bed,
        )
    except JobError as exc:
        if key is not None:
            storage.objects.delete(key)
        raise SubmitError(str(exc)) from None


def wait_for_job(
    storage: FarmStorage,
    job_id: str,
    timeout: float = 1800,
    progress: Callable[[str], None] = lambda _: None,
    poll: float = 0.5,
) -> JobView:
    """Poll until the job ends, reporting each stage change; raise WaitError on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        job = get_job(storage.db, job_id)
        line = f"{job.id} {job.status.value:<9} {job.stage or '-':<11} {job.progress:4.0%}"
        if job.attempts > 1:
            line += f" (attempt {job.attempts})"
        if line != last:
            progress(line)
            last = line
        if job.status in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise WaitError(f"job {job_id} still {job.status.value} after {timeout:g} s")
        time.sleep(poll)
