"""Template scenes: check an uploaded clip of stand-in actors (one, or two for a dialogue) and
track each actor's face through it once, so every render on it reuses one smoothed track (no
jump at chunk edges)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import FaceObservation, IdentityEmbedding, SceneTrack
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
    """What checking a scene measured: its format, the actors' tracks and a preview frame."""

    width: int
    height: int
    fps: float
    frame_count: int
    track: SceneTrack
    preview: np.ndarray  # (H, W, 3) uint8 RGB, a frame in which every actor is found
    others: tuple[SceneTrack, ...] = ()  # a two-person scene's second actor (on the right)

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


def _face_x(face: FaceObservation) -> float:
    return (face.box[0] + face.box[2]) / 2.0


def _assign(faces: list[FaceObservation], last_x: list[float | None]) -> list[int | None]:
    """Which detected face is which actor: left to right when all are found; else each face
    to the actor last seen nearest it (a face nobody was seen near yet is left out)."""
    if len(faces) == len(last_x):
        order = sorted(range(len(faces)), key=lambda j: _face_x(faces[j]))
        out: list[int | None] = [None] * len(faces)
        for actor, j in enumerate(order):
            out[j] = actor
        return out
    taken: set[int] = set()
    out = []
    for face in faces:
        seen = [(abs(_face_x(face) - x), a) for a, x in enumerate(last_x) if x is not None]
        seen = [(d, a) for d, a in seen if a not in taken]
        if not seen:
            out.append(None)
            continue
        actor = min(seen)[1]
        taken.add(actor)
        out.append(actor)
    return out


def check_scene(
    path: str | Path,
    analyzer: FaceAnalyzer,
    actors: int = 1,
    progress: Progress = lambda _f: None,
) -> SceneCheck:
    """Decode the whole clip, refuse it unless exactly `actors` face(s) — stand-in actors,
    each the same person throughout — appear in it, and return its tracked actors (left to
    right)."""
    # 1. The file decodes, whole, and is a usable length.
    info = check_clip(path, "the scene")
    if actors not in (1, 2):
        raise SceneError(f"a template scene has 1 or 2 stand-in actors, not {actors}")
    who = "the actor" if actors == 1 else "actor"

    # 2. Every frame: no more faces than declared actors; each actor's landmarks where found.
    n = info.frame_count
    marks = np.full((actors, n, analyzer.landmark_count, 2), np.nan, np.float32)
    boxes: list[dict[int, int]] = [{} for _ in range(actors)]
    last_x: list[float | None] = [None] * actors
    # Each actor's identity from frames spread over the clip (the next found one per probe).
    spread = np.linspace(0, n - 1, _IDENTITY_PROBES).round().astype(int).tolist()
    probes = [sorted(set(spread)) for _ in range(actors)]
    embedded: list[list[tuple[int, IdentityEmbedding]]] = [[] for _ in range(actors)]
    preview: np.ndarray | None = None  # the first frame from the middle on showing every actor
    from_middle = False
    for first in range(0, n, _BATCH):
        batch = read_frames(path, list(range(first, min(n, first + _BATCH))))
        for k, frame in sorted(batch.items()):
            faces = analyzer.detect(frame)
            if len(faces) > actors:
                raise SceneError(
                    f"{len(faces)} faces appear at {k / info.fps:.1f} s; a template declares "
                    f"{actors} stand-in actor{'s' if actors > 1 else ''} — real people enter a "
                    "video only as cast cameos, so crop or cut the others out"
                )
            for face, a in zip(faces, _assign(faces, last_x), strict=True):
                if a is None:
                    continue
                marks[a, k] = face.landmarks
                boxes[a][k] = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
                last_x[a] = _face_x(face)
                if probes[a] and k >= probes[a][0]:
                    embedded[a].append((k, analyzer.embed(frame, face)))
                    probes[a] = [p for p in probes[a] if p > k]
            if len(faces) == actors and (preview is None or (k >= n // 2 and not from_middle)):
                preview, from_middle = frame, k >= n // 2
        progress(min(1.0, (first + _BATCH) / n))

    if preview is None and actors > 1:
        raise SceneError(
            f"no frame shows all {actors} actors at once; a dialogue scene needs a clip in "
            "which both stand-in actors are found side by side, facing the camera"
        )
    tracks = []
    for a in range(actors):
        name = who if actors == 1 else f"{who} {'AB'[a]} ({('left', 'right')[a]})"
        # 3. Each actor is visible nearly throughout, large enough to carry a likeness.
        found = np.asarray(~np.isnan(marks[a]).any(axis=(1, 2)), bool)
        share = float(found.mean())
        if share < MIN_FACE_SHARE:
            raise SceneError(
                f"{name}'s face is found in {share:.0%} of frames; at least "
                f"{MIN_FACE_SHARE:.0%} is needed for a cameo to be cast onto it (keep the face "
                "turned to the camera and in frame)"
            )
        side = float(np.median(list(boxes[a].values())))
        if side < MIN_FACE_SIDE:
            raise SceneError(
                f"{name}'s face is {side:.0f} px across; at least {MIN_FACE_SIDE} px is "
                "needed to carry a likeness (frame the actor closer)"
            )

        # 4. One person throughout: a cut to someone else would put the cameo on them unasked.
        for j, (ka, ea) in enumerate(embedded[a]):
            for kb, eb in embedded[a][j + 1 :]:
                d = ea.distance(eb)
                if d > analyzer.same_person:
                    raise SceneError(
                        f"{name} at {ka / info.fps:.1f} s and at {kb / info.fps:.1f} s are "
                        f"different people ({analyzer.name} distance {d:.2f}); a template's "
                        "actors stay the same people throughout — cut the clip at the change"
                    )
        actor = IdentityEmbedding(
            analyzer.name,
            _mean_identity(analyzer, [e for _, e in embedded[a]]),
            analyzer.metric,
            analyzer.same_person,
        )
        tracks.append(SceneTrack(fill_and_smooth(marks[a]), analyzer.name, found, actor))
    assert preview is not None  # each actor was found in >= 90 % of frames
    return SceneCheck(
        info.width, info.height, info.fps, n, tracks[0], preview, others=tuple(tracks[1:])
    )
