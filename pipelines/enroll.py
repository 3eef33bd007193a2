"""Minimal enrollment: extract what rendering needs from a calibration recording and store a
cameo. (Recording validation and liveness belong to the full enrollment flow.)"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from cameofarm.cameos import CameoRecord, CameoStatus, create_cameo, list_cameos
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.cameos.registry import new_cameo_id
from cameofarm.configs import EnrollmentConfig
from cameofarm.models import codec
from cameofarm.models.contracts import FaceAnalyzer, SpeakerEncoder
from cameofarm.models.data import (
    FaceIdentity,
    FaceObservation,
    IdentityEmbedding,
    VoiceFrames,
    VoiceProfile,
)
from cameofarm.models.media import MediaError, probe_video, read_audio, read_frames
from cameofarm.models.reference.base_video import presenter_box
from cameofarm.models.reference.speech import speech_frames
from cameofarm.models.reference.speech import speech_seconds as count_speech
from cameofarm.models.reference.unit_voice import calibration_report, describe_voice
from cameofarm.models.reference.voice import SAMPLE_RATE, speaker_distance
from cameofarm.pipelines.checks import RecordingReport, check_recording
from cameofarm.pipelines.extractors import (
    Extractors,
    as_extractors,
    closest_match,
    identities_of,
    identities_to_summary,
)
from cameofarm.storage import FarmStorage

log = logging.getLogger(__name__)
SAMPLED_FRAMES = 96
# One speaker's median pitch moves little between 5 s stretches of speech; a jump of more
# than e^0.35 (~42 %, e.g. 100 → 142 Hz) is another voice. A same-pitch impostor passes.
MAX_PITCH_JUMP = 0.35
VOICE_STRETCH_SECONDS = 5.0  # the speaker encoder's threshold is measured on 5 s of speech
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


def _yaw_proxy(points5: np.ndarray) -> float:
    """How far the nose tip sits off the eyes' midline, in eye-gap units (0 = frontal)."""
    left, right, nose = points5[0], points5[1], points5[2]
    mid = (left + right) / 2
    return abs(float(nose[0] - mid[0])) / (float(np.linalg.norm(right - left)) + 1e-6)


def _mouth_openness(landmarks: np.ndarray) -> float:
    """Inner-lip gap over eye gap with 68-point landmarks; 0 for schemes without lips (the
    reference crop is then chosen by head pose alone)."""
    if landmarks.shape != (68, 2):
        return 0.0
    from cameofarm.models.reference.lip_sync import mouth_features

    return mouth_features(landmarks)[0]


def _reference_crop(sample: _Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = sample.face.box
    pad_x, pad_y = int(0.4 * (x1 - x0)), int(0.5 * (y1 - y0))
    h, w = sample.frame.shape[:2]
    cx0, cy0 = max(0, x0 - pad_x), max(0, y0 - pad_y)
    cx1, cy1 = min(w, x1 + pad_x), min(h, y1 + pad_y)
    crop = np.ascontiguousarray(sample.frame[cy0:cy1, cx0:cx1])
    shift = np.array([cx0, cy0], np.float32)
    return crop, sample.face.landmarks - shift, sample.face.points5 - shift


def match_id_photo(analyzer: FaceAnalyzer, photo: str | Path, identity: IdentityEmbedding) -> None:
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
    d = analyzer.embed(rgb, faces[0]).distance(identity)
    if d > identity.same_person:
        raise EnrollmentError(
            f"the ID photo is not the person in the recording ({analyzer.name} distance "
            f"{d:.2f} > {identity.same_person:g})"
        )


def refuse_voice_change(samples: np.ndarray, encoder: SpeakerEncoder) -> None:
    """Refuse a recording whose 5 s stretches of speech sound like different speakers."""
    max_distance = encoder.same_speaker
    # 5 s stretches (what the thresholds are measured on); a short clip is cut in two at least.
    stretch = float(np.clip(len(samples) / SAMPLE_RATE / 2, 3.0, VOICE_STRETCH_SECONDS))
    hop = int(stretch * SAMPLE_RATE)
    frames = speech_frames(samples, SAMPLE_RATE, 0.03)
    per_stretch = round(stretch / 0.03)
    parts = []
    for k in range(len(samples) // hop):
        share = float(frames[k * per_stretch : (k + 1) * per_stretch].mean()) if len(frames) else 0
        if share < 0.4:  # mostly pauses: too little to compare
            continue
        piece = samples[k * hop : (k + 1) * hop]
        pitch = _median_log_f0(piece)
        try:
            vector = encoder.embed(piece, SAMPLE_RATE)
        except ValueError:  # too little speech once pauses are cut out
            continue
        if pitch is not None:
            parts.append((k * stretch, vector, pitch))
    for (t_a, a, f_a), (t_b, b, f_b) in itertools.combinations(parts, 2):
        d = speaker_distance(a, b)
        jump = abs(f_a - f_b)
        if d > max_distance or jump > MAX_PITCH_JUMP:
            raise EnrollmentError(
                f"the voice changes: speech at {t_a:.0f} s and {t_b:.0f} s sounds like different "
                f"speakers ({encoder.name} distance {d:.2f}, limit {max_distance:g}; median pitch "
                f"{np.exp(f_a):.0f} vs {np.exp(f_b):.0f} Hz); one person must speak throughout"
            )


def _median_log_f0(piece: np.ndarray) -> float | None:
    import pyworld

    f0, _ = pyworld.dio(piece.astype(np.float64), SAMPLE_RATE, frame_period=10.0)
    voiced = f0[f0 > 0]
    return float(np.median(np.log(voiced))) if len(voiced) >= 20 else None


def refuse_taken_likeness(
    storage: FarmStorage, identities: dict[str, IdentityEmbedding], owner: str
) -> None:
    """Refuse a face that matches another owner's cameo or a protected likeness, comparing
    each analyzer's embedding only with embeddings of the same analyzer."""
    from cameofarm.cameos.protected import protected_vectors

    for cameo in list_cameos(storage.db):
        if cameo.owner == owner or cameo.status is CameoStatus.DELETED:
            continue
        hit = closest_match(identities, identities_of(cameo.summary))
        if hit is not None:
            raise EnrollmentError(
                f"this face matches cameo {cameo.id}, which belongs to another owner "
                f"({hit[0]} distance {hit[1]:.2f}); one likeness has one owner — ask them to "
                "transfer or delete it"
            )
    for label, vectors in protected_vectors(storage.db):
        theirs = {
            tag: IdentityEmbedding(tag, v, identities[tag].metric, identities[tag].same_person)
            for tag, v in vectors.items()
            if tag in identities
        }
        hit = closest_match(identities, theirs)
        if hit is not None:
            raise EnrollmentError(
                f"this face matches a protected likeness ({label}); it may never be enrolled"
            )


def _identity(
    analyzer: FaceAnalyzer, probes: list[_Sample], fps: float
) -> tuple[IdentityEmbedding, int]:
    """One analyzer's identity of the recording: the same person throughout (any two sampled
    frames of different people fail), aggregated around the medoid without the least typical
    tenth (blinks, blur, motion). Returns the embedding and how many frames made it."""
    embedded = [analyzer.embed(p.frame, p.face) for p in probes]
    n = len(embedded)
    pairwise = np.array([[embedded[a].distance(embedded[b]) for b in range(n)] for a in range(n)])
    i, j = np.unravel_index(int(np.argmax(pairwise)), pairwise.shape)
    if float(pairwise[i, j]) > analyzer.same_person:
        t_i, t_j = (probes[k].index / max(fps, 1.0) for k in sorted((int(i), int(j))))
        raise EnrollmentError(
            f"a different face appears: frames at {t_i:.1f} s and {t_j:.1f} s are "
            f"{pairwise[i, j]:.2f} apart ({analyzer.name}; same person <= "
            f"{analyzer.same_person:g}); the same person must be on camera for the whole "
            "recording"
        )
    vectors = np.stack([e.vector for e in embedded])
    distance = pairwise[int(np.argmin(pairwise.sum(axis=1)))]
    kept = vectors[distance <= np.percentile(distance, 90)]
    mean = kept.mean(axis=0).astype(np.float32)
    if analyzer.metric == "cosine":
        mean /= float(np.linalg.norm(mean)) + 1e-12
    return IdentityEmbedding(analyzer.name, mean, analyzer.metric, analyzer.same_person), n


def enroll_recording(
    storage: FarmStorage,
    extractors: Extractors | FaceAnalyzer,
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
    """Validate a recording, extract identity, mouth atlas and voice; store the cameo.

    `extractors` may be one face analyzer (then the reference voice profiler and mouth model).
    """
    ex = as_extractors(extractors)
    analyzer = ex.primary
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

    # 3. Identity, per analyzer, of the faces the first one found (aligned by their 5
    #    points); then no one else's likeness, compared analyzer by analyzer.
    step = max(1, len(found) // 16)
    probes = found[::step]
    identities: dict[str, IdentityEmbedding] = {}
    for each in ex.analyzers:
        identities[each.name], used = _identity(each, probes, info.fps)
        progress(f"identity from {used} frames ({each.name}, {each.embedding_size}-d)")
    refuse_taken_likeness(storage, identities, owner)
    if id_photo is not None:
        match_id_photo(analyzer, id_photo, identities[analyzer.name])
        progress("face matches the ID photo")
    score = [_yaw_proxy(s.face.points5) + 2.0 * _mouth_openness(s.face.landmarks) for s in found]
    ref = found[int(np.argmin(score))]
    crop, crop_marks, crop_points = _reference_crop(ref)
    identity = FaceIdentity(crop, crop_marks, crop_points, identities, analyzer.name)

    # 4. Mouth model from the recording's own frames.
    try:
        atlas = ex.mouth_model.build([s.frame for s in found], [s.face for s in found])
    except ValueError as exc:
        raise EnrollmentError(f"mouth model {ex.mouth_model.name}: {exc}") from exc
    progress(f"mouth atlas ({ex.mouth_model.name}): {', '.join(sorted(atlas.shapes))}")

    # 5. Voice profile from the speech; the same speaker throughout.
    try:
        voice = ex.profiler.profile(samples, SAMPLE_RATE)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from exc
    refuse_voice_change(samples, ex.speaker)
    speaker = ex.speaker.embed(samples, SAMPLE_RATE)
    speech_seconds = count_speech(samples, SAMPLE_RATE)
    pitch = (
        f", median F0 {np.exp(voice.f0_log_mean):.0f} Hz"
        if isinstance(voice, VoiceProfile | VoiceFrames)
        else ""
    )
    calibration = calibration_report(voice) if isinstance(voice, VoiceFrames) else None
    timbre = f", {describe_voice(voice)}" if isinstance(voice, VoiceFrames) else ""
    progress(f"voice ({ex.profiler.name}): {speech_seconds:.1f} s speech{pitch}{timbre}")

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
        "identities": identities_to_summary(identities),
        # Who speaks, by encoder: what an output's "sounds like the cameo" is measured against.
        "voices": {ex.speaker.name: [round(float(v), 6) for v in speaker]},
        "speech_seconds": round(speech_seconds, 2),
        # How renders in the cameo's voice scored when enrollment calibrated it.
        **({"voice_calibration": calibration} if calibration else {}),
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


def backfill_identities(
    storage: FarmStorage,
    extractors: Extractors,
    cameo_id: str,
    actor: str,
    progress: Progress = lambda _: None,
) -> list[str]:
    """Give a cameo the identity of every configured analyzer it lacks, from its stored
    recording (the same frames and faces enrollment uses); return the analyzers added."""
    from cameofarm.cameos import get_cameo
    from cameofarm.cameos.registry import add_summary_entries

    cameo = get_cameo(storage.db, cameo_id)
    have = identities_of(cameo.summary)
    missing = [a for a in extractors.analyzers if a.name not in have]
    if not missing or cameo.status is CameoStatus.DELETED:
        return []
    video = storage.objects.locate(cameo.recording_key)
    count = max(1, int(cameo.summary.get("frame_count", probe_video(video).frame_count)))
    indices = sorted(set(np.linspace(0, count - 1, min(SAMPLED_FRAMES, count)).astype(int)))
    frames = read_frames(video, indices)
    found = []
    for i in indices:
        faces = extractors.primary.detect(frames[i]) if i in frames else []
        if faces:
            found.append(_Sample(i, frames[i], faces[0]))
    if not found:
        raise EnrollmentError(f"cameo {cameo_id}: no face found in its stored recording")
    probes = found[:: max(1, len(found) // 16)]
    added = {}
    for analyzer in missing:
        added[analyzer.name], used = _identity(
            analyzer, probes, float(cameo.summary.get("fps", 25))
        )
        progress(f"{cameo_id}: identity from {used} frames ({analyzer.name})")
    key = f"{cameo.assets_key}/identity.npz"
    identity = codec.identity_from_bytes(storage.objects.get_bytes(key))
    merged = {**identity.embeddings, **added}
    storage.objects.put_bytes(key, codec.identity_to_bytes(replace(identity, embeddings=merged)))
    add_summary_entries(storage.db, cameo_id, "identities", identities_to_summary(added), actor)
    return sorted(added)
