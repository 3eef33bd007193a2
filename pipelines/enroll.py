"""Minimal enrollment: extract what rendering needs from a calibration recording and store a
cameo. (Recording validation and liveness belong to the full enrollment flow.)"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cameofarm.cameos import CameoRecord, CameoStatus, create_cameo, list_cameos
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.cameos.registry import new_cameo_id
from cameofarm.configs import EnrollmentConfig
from cameofarm.models import codec
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import FaceIdentity, FaceObservation, MouthAtlas
from cameofarm.models.media import MediaError, probe_video, read_audio, read_frames
from cameofarm.models.reference.base_video import presenter_box
from cameofarm.models.reference.lip_sync import (
    build_mouth_shape,
    choose_atlas_frames,
    mouth_features,
)
from cameofarm.models.reference.voice import (
    SAMPLE_RATE,
    analyze_voice,
    speaker_distance,
    speaker_embedding,
    speech_mask,
)
from cameofarm.models.reference.warp import CANONICAL_SIZE
from cameofarm.pipelines.checks import RecordingReport, check_recording
from cameofarm.storage import FarmStorage

log = logging.getLogger(__name__)
SAMPLED_FRAMES = 96
# One speaker's median pitch moves little between 5 s stretches of speech; a jump of more
# than e^0.35 (~42 %, e.g. 100 → 142 Hz) is another voice. A same-pitch impostor passes.
MAX_PITCH_JUMP = 0.35
Progress = Callable[[str], None]


class EnrollmentError(ValueError):
    """The recording cannot make a cameo; the message says why and what to do."""

    def __init__(self, message: str, report: RecordingReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class _Sample:
    index: int
    frame: np.ndarray
    face: FaceObservation


def _yaw_proxy(marks: np.ndarray) -> float:
    """How far the nose tip sits off the eyes' midline, in eye-gap units (0 = frontal)."""
    left, right = marks[36:42].mean(0), marks[42:48].mean(0)
    mid = (left + right) / 2
    return abs(float(marks[30][0] - mid[0])) / (float(np.linalg.norm(right - left)) + 1e-6)


def _reference_crop(sample: _Sample) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = sample.face.box
    pad_x, pad_y = int(0.4 * (x1 - x0)), int(0.5 * (y1 - y0))
    h, w = sample.frame.shape[:2]
    cx0, cy0 = max(0, x0 - pad_x), max(0, y0 - pad_y)
    cx1, cy1 = min(w, x1 + pad_x), min(h, y1 + pad_y)
    crop = np.ascontiguousarray(sample.frame[cy0:cy1, cx0:cx1])
    return crop, (sample.face.landmarks - [cx0, cy0]).astype(np.float32)


def match_id_photo(
    analyzer: FaceAnalyzer, photo: str | Path, embedding: np.ndarray, max_distance: float
) -> None:
    """Refuse unless the one face in the ID photo is the recording's person."""
    import cv2

    picture = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if picture is None:
        raise EnrollmentError(f"{photo}: not an image OpenCV can read (use JPEG or PNG)")
    rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    faces = analyzer.detect(rgb)
    if len(faces) != 1:
        raise EnrollmentError(
            f"{photo}: the ID photo must show exactly one face; found {len(faces)}"
        )
    d = float(np.linalg.norm(analyzer.embed(rgb, faces[0]) - embedding))
    if d > max_distance:
        raise EnrollmentError(
            f"the ID photo is not the person in the recording (distance {d:.2f} > {max_distance:g})"
        )


def refuse_voice_change(samples: np.ndarray, max_distance: float) -> None:
    """Refuse a recording whose speech segments sound like different speakers."""
    segment = float(np.clip(len(samples) / SAMPLE_RATE / 6, 3.0, 5.0))
    hop = int(segment * SAMPLE_RATE)
    active = speech_mask(samples, SAMPLE_RATE, 30.0)
    per_segment = max(1, round(segment / 0.03))
    parts = []
    for k in range(len(samples) // hop):
        share = float(active[k * per_segment : (k + 1) * per_segment].mean()) if len(active) else 0
        if share >= 0.4:  # mostly speech: comparable
            piece = samples[k * hop : (k + 1) * hop]
            pitch = _median_log_f0(piece)
            if pitch is not None:
                parts.append((k * segment, speaker_embedding(piece, SAMPLE_RATE), pitch))
    for (t_a, a, f_a), (t_b, b, f_b) in itertools.combinations(parts, 2):
        d = speaker_distance(a, b)
        jump = abs(f_a - f_b)
        if d > max_distance or jump > MAX_PITCH_JUMP:
            raise EnrollmentError(
                f"the voice changes: speech at {t_a:.0f} s and {t_b:.0f} s sounds like different "
                f"speakers (timbre distance {d:.2f}, limit {max_distance:g}; median pitch "
                f"{np.exp(f_a):.0f} vs {np.exp(f_b):.0f} Hz); one person must speak throughout"
            )


def _median_log_f0(piece: np.ndarray) -> float | None:
    import pyworld

    f0, _ = pyworld.dio(piece.astype(np.float64), SAMPLE_RATE, frame_period=10.0)
    voiced = f0[f0 > 0]
    return float(np.median(np.log(voiced))) if len(voiced) >= 20 else None


def refuse_taken_likeness(
    storage: FarmStorage, embedding: np.ndarray, owner: str, max_distance: float
) -> None:
    """Refuse a face that matches another owner's cameo or a protected likeness."""
    from cameofarm.cameos.protected import match_protected

    for cameo in list_cameos(storage.db):
        if cameo.owner == owner or cameo.status is CameoStatus.DELETED:
            continue
        other = cameo.summary.get("embedding")
        if other is not None and len(other) == len(embedding):
            d = float(np.linalg.norm(np.asarray(other, np.float32) - embedding))
            if d <= max_distance:
                raise EnrollmentError(
                    f"this face matches cameo {cameo.id}, which belongs to another owner "
                    f"(distance {d:.2f}); one likeness has one owner — ask them to transfer or "
                    "delete it"
                )
    hit = match_protected(storage.db, embedding, max_distance)
    if hit is not None:
        raise EnrollmentError(
            f"this face matches a protected likeness ({hit}); it may never be enrolled"
        )


def enroll_recording(
    storage: FarmStorage,
    analyzer: FaceAnalyzer,
    video: str | Path,
    *,
    name: str,
    owner: str,
    checks: EnrollmentConfig,
    audio: str | Path | None = None,
    verified_by: str | None = None,
    id_photo: str | Path | None = None,
    presenter_from: float = 0.0,
    progress: Progress = lambda _: None,
) -> CameoRecord:
    """Validate a recording, extract identity, mouth atlas and voice; store the cameo."""
    if not is_display_text(name):
        raise EnrollmentError(f"name must be 1-200 characters, {DISPLAY_TEXT_RULE}")
    # 1. Check the recording: every check must pass (the same as `cameofarm enroll check`).
    report = check_recording(video, analyzer, checks, audio)
    if not report.accepted:
        failed = ", ".join(c.name for c in report.failed)
        raise EnrollmentError(f"recording rejected ({failed}):\n{report.describe()}", report)
    progress(f"recording passed all {len(report.checks)} checks")
    try:
        info = probe_video(video)
        samples = read_audio(audio if audio is not None else video, SAMPLE_RATE)
    except MediaError as exc:
        raise EnrollmentError(str(exc)) from exc
    progress(f"recording {info.width}x{info.height} @ {info.fps:g} fps, {info.duration:.1f} s")

    # 2. Sample frames and find the face in each.
    count = max(1, info.frame_count)
    indices = sorted(set(np.linspace(0, count - 1, min(SAMPLED_FRAMES, count)).astype(int)))
    frames = read_frames(video, indices)
    found: list[_Sample] = []
    for i in indices:
        faces = analyzer.detect(frames[i])
        if faces:
            found.append(_Sample(i, frames[i], faces[0]))
    fraction = len(found) / len(indices)
    progress(f"face found in {len(found)}/{len(indices)} sampled frames")
    if not found:  # the checks above require a face in most frames; this guards the maths
        raise EnrollmentError("no face found in the sampled frames; record facing the camera")

    # 3. Identity: the same person throughout; outliers dropped; no one else's likeness.
    step = max(1, len(found) // 16)
    probes = found[::step]
    embeddings = np.stack([analyzer.embed(p.frame, p.face) for p in probes])
    # Pairwise: any two sampled frames of different people fail, wherever they fall.
    pairwise = np.linalg.norm(embeddings[:, None, :] - embeddings[None, :, :], axis=2)
    i, j = np.unravel_index(int(np.argmax(pairwise)), pairwise.shape)
    if float(pairwise[i, j]) > checks.max_identity_distance:
        t_i, t_j = (probes[k].index / max(info.fps, 1.0) for k in sorted((int(i), int(j))))
        raise EnrollmentError(
            f"a different face appears: frames at {t_i:.1f} s and {t_j:.1f} s are "
            f"{pairwise[i, j]:.2f} apart (same person <= {checks.max_identity_distance:g}); "
            "the same person must be on camera for the whole recording"
        )
    # Aggregate around the medoid, dropping the least typical tenth (blinks, blur, motion).
    medoid = embeddings[int(np.argmin(pairwise.sum(axis=1)))]
    distance = np.linalg.norm(embeddings - medoid, axis=1)
    embedding = embeddings[distance <= np.percentile(distance, 90)].mean(axis=0).astype(np.float32)
    refuse_taken_likeness(storage, embedding, owner, checks.max_identity_distance)
    if id_photo is not None:
        match_id_photo(analyzer, id_photo, embedding, checks.max_identity_distance)
        progress("face matches the ID photo")
    features = np.array([mouth_features(s.face.landmarks) for s in found], np.float32)
    score = [_yaw_proxy(s.face.landmarks) + 2.0 * features[k, 0] for k, s in enumerate(found)]
    ref = found[int(np.argmin(score))]
    crop, crop_marks = _reference_crop(ref)
    identity = FaceIdentity(embedding, crop, crop_marks, backend=analyzer.name)
    progress(f"identity from {len(embeddings)} frames ({analyzer.name}, {embedding.size}-d)")

    # 4. Mouth atlas: one canonical mouth shape per viseme from the recording itself.
    picks = choose_atlas_frames(features)
    atlas = MouthAtlas(
        CANONICAL_SIZE,
        {
            vis: build_mouth_shape(vis, found[k].frame, found[k].face.landmarks)
            for vis, k in picks.items()
        },
    )
    progress(f"mouth atlas: {', '.join(sorted(atlas.shapes))}")

    # 5. Voice profile from the speech; the same speaker throughout.
    try:
        voice = analyze_voice(samples, SAMPLE_RATE)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from exc
    refuse_voice_change(samples, checks.max_speaker_distance)
    progress(
        f"voice: {voice.speech_seconds:.1f} s speech, median F0 {np.exp(voice.f0_log_mean):.0f} Hz"
    )

    # 6. Store assets, then the record; nothing is left behind if any write fails.
    cameo_id = new_cameo_id()
    prefix = f"cameos/{cameo_id}"
    boxes = np.array([s.face.box for s in found])
    left, top, right, bottom = (int(v) for v in np.median(boxes, axis=0))
    face_box = (left, top, right, bottom)
    summary = {
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frame_count": info.frame_count,
        "first_frame": min(int(presenter_from * info.fps), max(0, info.frame_count - 2)),
        "face_fraction": round(fraction, 3),
        "presenter_box": list(presenter_box(face_box, info.width, info.height)),
        "embedding_backend": analyzer.name,
        "embedding": [round(float(v), 6) for v in embedding],
        "speech_seconds": round(voice.speech_seconds, 2),
    }
    written: list[str] = []
    try:
        written.append(storage.objects.put_file(f"{prefix}/recording.mp4", video, "video/mp4"))
        if audio is not None:
            written.append(storage.objects.put_file(f"{prefix}/speech.wav", audio, "audio/wav"))
        for key, data in (
            ("identity.npz", codec.identity_to_bytes(identity)),
            ("voice.npz", codec.voice_to_bytes(voice)),
            ("atlas.npz", codec.atlas_to_bytes(atlas)),
        ):
            written.append(storage.objects.put_bytes(f"{prefix}/{key}", data))
        record = create_cameo(
            storage.db,
            cameo_id=cameo_id,
            name=name,
            owner=owner,
            recording_key=f"{prefix}/recording.mp4",
            assets_key=prefix,
            summary=summary,
            status=CameoStatus.VERIFIED if verified_by else CameoStatus.PENDING,
            reason=verified_by or "enrolled; liveness not yet verified",
        )
    except BaseException:
        for key in written:
            storage.objects.delete(key)
        raise
    progress(f"stored cameo {record.id}")
    return record
