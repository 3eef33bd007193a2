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
from cameofarm.storage import FarmStorage

MAX_BACKGROUND_BYTES = 25 * 1024 * 1024
MAX_BACKGROUND_SIDE = 8192


class SubmitError(ValueError):
    """A render request was refused; the message says what to change."""


class WaitError(RuntimeError):
    """A job did not end in time."""


def store_background(storage: FarmStorage, data: bytes, owner: str, config: FarmConfig) -> str:
    """Check an uploaded background image (it must show no face), store it as PNG under its
    owner; return the key."""
    if len(data) > MAX_BACKGROUND_BYTES:
        raise SubmitError(f"the background is {len(data) >> 20} MiB; the limit is 25 MiB")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise SubmitError("the background is not an image OpenCV can decode (PNG/JPEG)")
    h, w = image.shape[:2]
    if max(h, w) > MAX_BACKGROUND_SIDE or min(h, w) < 16:
        raise SubmitError(f"the background is {w}x{h}; use 16..{MAX_BACKGROUND_SIDE} px sides")
    from cameofarm.pipelines.extractors import primary_analyzer

    faces = primary_analyzer(config, storage).detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if faces:
        raise SubmitError(
            f"the background shows {len(faces)} face(s); real people enter a video only as cast "
            "cameos, with their consent — use a background without people, or a template scene "
            "whose actor the cameo replaces (`cameofarm scenes add`)"
        )
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
