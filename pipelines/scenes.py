"""Template scenes: check an uploaded clip of stand-in actors and track the actor's face
through it once, so every render on it reuses one smoothed track (no jump at chunk edges)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import IdentityEmbedding, SceneTrack
from cameofarm.models.media import (
    MediaError,
    VideoInfo,
    looks_damaged,
    probe_video,
    read_frames,
)

MIN_SECONDS = 1.0
MAX_SECONDS = 60.0
MIN_FACE_SHARE = 0.9  # of frames in which the actor's face must be found
MIN_FACE_SIDE = 64  # px: a smaller face has too little detail to carry a cameo's likeness
SMOOTH_FRAMES = 1.5  # landmark smoothing (Gaussian sigma, in frames): steadies detector jitter
_BATCH = 32  # frames decoded at a time: memory stays flat on long 1080p clips
_IDENTITY_PROBES = 8


class SceneError(ValueError):
    """The scene cannot be used; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class SceneCheck:
    """What checking a scene measured: its format, the actor's track and a preview frame."""

    width: int
    height: int
    fps: float
    frame_count: int
    track: SceneTrack
    preview: np.ndarray  # (H, W, 3) uint8 RGB, a frame in which the actor is found

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps


Progress = Callable[[float], None]


def fill_and_smooth(marks: np.ndarray, sigma: float = SMOOTH_FRAMES) -> np.ndarray:
    """Fill frames without a face (NaN) by linear interpolation from their neighbours and
    smooth each coordinate over time with a Gaussian of `sigma` frames."""
    n = len(marks)
    flat = marks.reshape(n, -1).astype(np.float64)
    known = ~np.isnan(flat).any(axis=1)
    if not known.any():
        raise ValueError("no frame has landmarks to fill from")
    t = np.arange(n)
    filled = np.stack([np.interp(t, t[known], flat[known, j]) for j in range(flat.shape[1])], 1)
    if sigma > 0 and n > 1:
        radius = max(1, int(3 * sigma))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        padded = np.pad(filled, ((radius, radius), (0, 0)), mode="edge")
        filled = np.stack(
            [np.convolve(padded[:, j], kernel, mode="valid") for j in range(flat.shape[1])], 1
        )
    return filled.reshape(marks.shape).astype(np.float32)


def _mean_identity(analyzer: FaceAnalyzer, embeddings: list[IdentityEmbedding]) -> np.ndarray:
    vector = np.mean([e.vector for e in embeddings], axis=0).astype(np.float32)
    if analyzer.metric == "cosine":
        vector /= float(np.linalg.norm(vector)) + 1e-12
    return vector


def check_clip(
    path: str | Path, what: str, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS
) -> VideoInfo:
    """Refuse (SceneError, naming `what`) a clip that is damaged, not a video, or of another
    length; return what it holds."""
    damage = looks_damaged(path)
    if damage:
        raise SceneError(f"{what} is {damage}; upload the original file again")
    try:
        info = probe_video(path)
    except MediaError as exc:
        raise SceneError(f"{what} is not a usable video: {exc}") from None
    if info.frame_count <= 0:  # e.g. a still image, which OpenCV opens as a "video"
        raise SceneError(
            f"{what} has no countable video frames; upload a video clip (MP4, MOV or WebM)"
        )
    if not min_seconds <= info.duration <= max_seconds:
        raise SceneError(
            f"{what} is {info.duration:.1f} s long; use a clip of {min_seconds:g} to "
            f"{max_seconds:g} s (it is looped back and forth to the speech's length)"
        )
    return info


def check_scene(
    path: str | Path,
    analyzer: FaceAnalyzer,
    actors: int = 1,
    progress: Progress = lambda _f: None,
) -> SceneCheck:
    """Decode the whole clip, refuse it unless exactly `actors` face(s) — one stand-in actor,
    the same person throughout — appear in it, and return its tracked actor."""
    # 1. The file decodes, whole, and is a usable length.
    info = check_clip(path, "the scene")
    if actors != 1:
        raise SceneError("a template scene has exactly one stand-in actor for now")

    # 2. Every frame: no more faces than declared actors; the actor's landmarks where found.
    n = info.frame_count
    marks = np.full((n, analyzer.landmark_count, 2), np.nan, np.float32)
    boxes: dict[int, int] = {}
    # The actor's identity from frames spread over the clip (the next found one per probe).
    probes = sorted(set(np.linspace(0, n - 1, _IDENTITY_PROBES).round().astype(int).tolist()))
    embedded: list[tuple[int, IdentityEmbedding]] = []
    preview: np.ndarray | None = None  # the actor's first frame from the middle on
    from_middle = False
    for first in range(0, n, _BATCH):
        batch = read_frames(path, list(range(first, min(n, first + _BATCH))))
        for k, frame in sorted(batch.items()):
            faces = analyzer.detect(frame)
            if len(faces) > actors:
                raise SceneError(
                    f"{len(faces)} faces appear at {k / info.fps:.1f} s; a template declares "
                    f"{actors} stand-in actor — real people enter a video only as cast cameos, "
                    "so crop or cut the others out"
                )
            if not faces:
                continue
            face = faces[0]
            marks[k] = face.landmarks
            boxes[k] = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
            if preview is None or (k >= n // 2 and not from_middle):
                preview, from_middle = frame, k >= n // 2
            if probes and k >= probes[0]:
                embedded.append((k, analyzer.embed(frame, face)))
                probes = [p for p in probes if p > k]
        progress(min(1.0, (first + _BATCH) / n))

    # 3. The actor is visible nearly throughout, large enough to carry a likeness.
    found = np.asarray(~np.isnan(marks).any(axis=(1, 2)), bool)
    share = float(found.mean())
    if share < MIN_FACE_SHARE:
        raise SceneError(
            f"the actor's face is found in {share:.0%} of frames; at least "
            f"{MIN_FACE_SHARE:.0%} is needed for a cameo to be cast onto it (keep the face "
            "turned to the camera and in frame)"
        )
    side = float(np.median(list(boxes.values())))
    if side < MIN_FACE_SIDE:
        raise SceneError(
            f"the actor's face is {side:.0f} px across; at least {MIN_FACE_SIDE} px is needed "
            "to carry a likeness (frame the actor closer)"
        )

    # 4. One person throughout: a cut to someone else would put the cameo on them unasked.
    for a, (ka, ea) in enumerate(embedded):
        for kb, eb in embedded[a + 1 :]:
            d = ea.distance(eb)
            if d > analyzer.same_person:
                raise SceneError(
                    f"the actor at {ka / info.fps:.1f} s and at {kb / info.fps:.1f} s are "
                    f"different people ({analyzer.name} distance {d:.2f}); a template has one "
                    "stand-in actor throughout — cut the clip at the change"
                )
    actor = IdentityEmbedding(
        analyzer.name,
        _mean_identity(analyzer, [e for _, e in embedded]),
        analyzer.metric,
        analyzer.same_person,
    )
    assert preview is not None  # the face was found in >= 90 % of frames
    track = SceneTrack(fill_and_smooth(marks), analyzer.name, found, actor)
    return SceneCheck(info.width, info.height, info.fps, n, track, preview)
