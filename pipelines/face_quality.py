"""How well a video carries its cameo's face: per measured frame, whether the face is found,
its identity distance to the cameo and to the scene's original actor (by one analyzer, never
across analyzers), and how the mouth's opening follows the speech's loudness.

Stored with each job next to the voice figures, recomputed by `cameofarm quality VIDEO`, and
the farm refuses to publish a video in which the cameo is not recognisable. A render measures
its chunks on the composite replicas as they stream (`FaceMeasure`, `measure_frames`: the
composed frames, before encoding) and sums them up with the speech (`summarize`); `quality`
decodes a published video and does the same.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.cameos import CameoRecord
from cameofarm.configs import AnalyzerConfig, FarmConfig
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import FaceObservation, IdentityEmbedding
from cameofarm.models.media import probe_video, read_audio, read_frames
from cameofarm.storage import FarmStorage

MAX_FRAMES = 150  # frames measured per video: every frame of a Plus job, every 4th of a Pro one
MAX_LAG_SECONDS = 0.4  # how far apart mouth and sound may be looked for
_AUDIO_RATE = 16000
_BATCH = 32


@dataclass(frozen=True)
class FaceQuality:
    """Identity and lip-sync figures of one video against one cameo."""

    analyzer: str
    frames: int  # frames measured
    stride: int  # every stride-th frame of the video was measured
    face_found: float  # share of measured frames with a face
    recognised: float  # share in which the face is the cameo's (see `recognisable`)
    to_cameo: float | None  # median identity distance to the cameo, over frames with a face
    to_actor: float | None  # median distance to the scene's original actor (None: no actor)
    same_person: float  # the analyzer's same-person distance
    lip_sync: float | None  # correlation of mouth opening with speech loudness, at best lag
    lip_lag_ms: float | None  # the lag (mouth after sound, ms) at which it is best

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        text = (
            f"face ({self.analyzer}, {self.frames} frames): found in {self.face_found:.0%}; the "
            f"cameo's in {self.recognised:.0%}"
        )
        if self.to_cameo is not None:
            text += f" (median distance to the cameo {self.to_cameo:.2f}"
            if self.to_actor is not None:
                text += f", to the scene's actor {self.to_actor:.2f}"
            text += f"; same person <= {self.same_person:g})"
        if self.lip_sync is not None and self.lip_lag_ms is not None:
            text += (
                f"; lip sync: mouth opening follows the speech's loudness at r = "
                f"{self.lip_sync:.2f}, lag {self.lip_lag_ms:+.0f} ms"
            )
        return text


def recognisable(to_cameo: float, to_actor: float | None, same_person: float) -> bool:
    """A face is the cameo's when it is within the same-person distance of the cameo and
    closer to the cameo than to the scene's original actor."""
    return to_cameo <= same_person and (to_actor is None or to_cameo < to_actor)


def _mouth_opening(landmarks: np.ndarray) -> float:
    if landmarks.shape != (68, 2):
        return math.nan
    from cameofarm.models.reference.lip_sync import mouth_features

    return float(mouth_features(landmarks)[0])


def loudness(samples: np.ndarray, rate: int, times: np.ndarray, window: float) -> np.ndarray:
    """RMS of the audio in a window around each time (zeros without audio)."""
    out = np.zeros(len(times), np.float64)
    if samples.size == 0:
        return out
    half = max(1, int(window * rate / 2))
    for i, t in enumerate(times):
        c = int(t * rate)
        piece = samples[max(0, c - half) : c + half]
        out[i] = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) if piece.size else 0.0
    return out


def best_lag(mouth: np.ndarray, loud: np.ndarray, max_lag: int) -> tuple[float, int] | None:
    """The highest Pearson correlation of mouth[i + lag] with loud[i] over lags in
    [-max_lag, max_lag], and that lag (frames); None where too little overlaps or varies."""
    best: tuple[float, int] | None = None
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = mouth[lag:], loud[: len(loud) - lag]
        else:
            a, b = mouth[:lag], loud[-lag:]
        ok = ~(np.isnan(a) | np.isnan(b))
        if ok.sum() < 8 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
            continue
        r = float(np.corrcoef(a[ok], b[ok])[0, 1])
        if best is None or r > best[0]:
            best = (r, lag)
    return best


def pick_face(
    faces: list[FaceObservation], place: int, people: int, width: int
) -> FaceObservation | None:
    """The face of person `place` (left to right) of `people` side by side: the largest face
    when there is one person; else by order, or by which side of the frame a lone face is on."""
    if not faces:
        return None
    if people == 1:
        return faces[0]
    ordered = sorted(faces, key=lambda f: f.box[0] + f.box[2])
    if len(ordered) == people:
        return ordered[place]
    lone = [
        f
        for f in ordered
        if min(people - 1, int((f.box[0] + f.box[2]) / 2 / width * people)) == place
    ]
    return lone[0] if len(lone) == 1 else None


@dataclass(frozen=True)
class FrameFaces:
    """Per measured frame (its index in the video): identity distance to the cameo and to
    the scene's actor, and the mouth's opening; NaN where no face was found."""

    indices: tuple[int, ...]
    to_cameo: tuple[float, ...]
    to_actor: tuple[float, ...]
    mouth: tuple[float, ...]

    @staticmethod
    def join(parts: list[FrameFaces]) -> FrameFaces:
        """The parts' frames as one, in video order."""
        rows = sorted(
            (i, c, a, m)
            for p in parts
            for i, c, a, m in zip(p.indices, p.to_cameo, p.to_actor, p.mouth, strict=True)
        )
        columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
        return FrameFaces(*(tuple(c) for c in columns))


def measure_frames(
    frames: dict[int, np.ndarray],
    analyzer: FaceAnalyzer,
    cameo: IdentityEmbedding,
    actor: IdentityEmbedding | None = None,
    place: tuple[int, int] = (0, 1),
) -> FrameFaces:
    """Measure each frame (index → RGB frame): the face of person `place` (index, count),
    its distances to the cameo and the scene's actor, and its mouth opening."""
    if cameo.analyzer != analyzer.name or (actor is not None and actor.analyzer != analyzer.name):
        raise ValueError(
            f"identities by {cameo.analyzer}"
            + (f" and {actor.analyzer}" if actor is not None else "")
            + f" cannot be compared with faces found by {analyzer.name}"
        )
    indices = sorted(frames)
    to_cameo, to_actor, mouth = [], [], []
    for k in indices:
        face = pick_face(analyzer.detect(frames[k]), *place, frames[k].shape[1])
        if face is None:
            to_cameo.append(math.nan)
            to_actor.append(math.nan)
            mouth.append(math.nan)
            continue
        embedding = analyzer.embed(frames[k], face)
        to_cameo.append(embedding.distance(cameo))
        to_actor.append(embedding.distance(actor) if actor is not None else math.nan)
        mouth.append(_mouth_opening(face.landmarks))
    return FrameFaces(tuple(indices), tuple(to_cameo), tuple(to_actor), tuple(mouth))


def summarize(
    faces: FrameFaces,
    analyzer: str,
    cameo: IdentityEmbedding,
    actor: IdentityEmbedding | None,
    fps: float,
    stride: int,
    loud: np.ndarray,
) -> FaceQuality:
    """The figures of the measured frames; `loud` is the speech's loudness at each of them
    (the window `stride` frames wide)."""
    to_cameo, to_actor = np.asarray(faces.to_cameo), np.asarray(faces.to_actor)
    mouth = np.asarray(faces.mouth)
    found = ~np.isnan(to_cameo)
    recognised = sum(
        recognisable(
            float(to_cameo[j]), None if actor is None else float(to_actor[j]), cameo.same_person
        )
        for j in np.flatnonzero(found)
    )
    # Lip sync: mouth opening against loudness, at the lag that fits best.
    max_lag = max(1, round(MAX_LAG_SECONDS * fps / stride))
    fit = best_lag(mouth, loud, max_lag)
    n = len(faces.indices)
    return FaceQuality(
        analyzer=analyzer,
        frames=n,
        stride=stride,
        face_found=float(found.mean()) if n else 0.0,
        recognised=recognised / n if n else 0.0,
        to_cameo=float(np.median(to_cameo[found])) if found.any() else None,
        to_actor=float(np.median(to_actor[found])) if actor is not None and found.any() else None,
        same_person=cameo.same_person,
        lip_sync=None if fit is None else fit[0],
        lip_lag_ms=None if fit is None else fit[1] * stride / fps * 1000.0,
    )


def measure_stride(frame_count: int, max_frames: int = MAX_FRAMES) -> int:
    """Every how many frames a video of `frame_count` frames is measured."""
    return max(1, math.ceil(frame_count / max_frames))


def face_quality(
    path: str | Path,
    analyzer: FaceAnalyzer,
    cameo: IdentityEmbedding,
    actor: IdentityEmbedding | None = None,
    max_frames: int = MAX_FRAMES,
    place: tuple[int, int] = (0, 1),
) -> FaceQuality:
    """Measure a video's face against the cameo (and the scene's actor) by one analyzer. In a
    video of several people side by side, `place` (index, count) says which is the cameo's."""
    info = probe_video(path)
    stride = measure_stride(info.frame_count, max_frames)
    indices = list(range(0, info.frame_count, stride))
    parts = [
        measure_frames(read_frames(path, indices[i : i + _BATCH]), analyzer, cameo, actor, place)
        for i in range(0, len(indices), _BATCH)
    ]
    faces = FrameFaces.join(parts)
    times = np.asarray(faces.indices, np.float64) / info.fps
    loud = loudness(read_audio(path, _AUDIO_RATE), _AUDIO_RATE, times, stride / info.fps)
    return summarize(faces, analyzer.name, cameo, actor, info.fps, stride, loud)


@dataclass(frozen=True)
class FaceMeasure:
    """What a replica needs to measure a cameo's face in a render's chunks: the analyzer (as
    configured) and its same-person distance, the cameo's identity by it, the scene actor's
    (None: no scene actor), where the cameo stands (index, count) and the stride."""

    analyzer: AnalyzerConfig
    same_person: float | None
    cameo: IdentityEmbedding
    actor: IdentityEmbedding | None
    place: tuple[int, int]
    stride: int

    def picks(self, start: int, count: int) -> list[int]:
        """The frames of [start, start + count) this measure looks at."""
        first = -(-start // self.stride) * self.stride
        return list(range(first, start + count, self.stride))


def scene_track_key(
    storage: FarmStorage, scene_id: str | None, quality: dict[str, Any] | None
) -> str | None:
    """Where the track of a job's scene actor is: a library scene's (while it is still in the
    library) or a generated scene's, as the job's stored report names it."""
    from cameofarm.storage.db import SceneRow

    if scene_id is not None:
        with storage.db.session() as s:
            row = s.get(SceneRow, scene_id)
            return row.track_key if row is not None else None
    generated = (quality or {}).get("scene") or {}
    key = generated.get("track_key")
    return key if isinstance(key, str) else None


def measure_face(
    config: FarmConfig,
    storage: FarmStorage,
    cameo: CameoRecord,
    track_key: str | None,
    video: str | Path,
    actor_index: int = 0,
    actors: int = 1,
) -> FaceQuality | None:
    """A video's face figures by the farm's primary analyzer, against the cameo and (given the
    scene's track) the scene's actor `actor_index` of `actors`, whose place the cameo took;
    None when the cameo has no identity by that analyzer."""
    from cameofarm.pipelines.extractors import primary_analyzer

    # The video's own frame count sets the stride: face_quality finds it.
    measure = face_measure(config, storage, cameo, track_key, 1, actor_index, actors)
    if measure is None:
        return None
    analyzer = primary_analyzer(config, storage)
    return face_quality(video, analyzer, measure.cameo, measure.actor, place=measure.place)


def face_measure(
    config: FarmConfig,
    storage: FarmStorage,
    cameo: CameoRecord,
    track_key: str | None,
    frame_count: int,
    actor_index: int = 0,
    actors: int = 1,
) -> FaceMeasure | None:
    """How a render's chunks are measured against the cameo (see `measure_face`); None when
    the cameo has no identity by the farm's primary analyzer."""
    from cameofarm.models import codec
    from cameofarm.pipelines.extractors import (
        analyzer_same_person,
        identities_of,
        primary_analyzer_name,
    )

    spec = config.enrollment.analyzers[0]
    name = primary_analyzer_name(config, storage)  # (the replicas measure, not this process)
    identity = identities_of(cameo.summary).get(name)
    if identity is None:
        return None
    actor = None
    if track_key is not None:
        track = codec.scene_tracks_from_bytes(storage.objects.get_bytes(track_key))[actor_index]
        actor = track.actor if track.actor.analyzer == name else None
    same = analyzer_same_person(spec, config.enrollment)
    place = (actor_index, actors)
    return FaceMeasure(spec, same, identity, actor, place, measure_stride(frame_count))
