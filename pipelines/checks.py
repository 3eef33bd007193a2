"""Recording validation: every check reports what it measured, its threshold and a remedy.

Used by `cameofarm enroll check` and by enrollment itself, so a recording that would make a
poor (or no) likeness is refused before anything is stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from cameofarm.configs import EnrollmentConfig
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.media import (
    MediaError,
    VideoInfo,
    looks_damaged,
    probe_video,
    read_audio,
    read_frames,
)
from cameofarm.models.reference.pose import head_pose
from cameofarm.models.reference.speech import speech_frames
from cameofarm.models.reference.voice import SAMPLE_RATE, speech_mask

VAD_FRAME_SECONDS = 0.03
CLIP_LEVEL = 0.98
REMEDY = {
    "media": "export an ordinary MP4 (H.264 + AAC) straight from the camera or phone",
    "intact": "the file is damaged or was cut off while copying: copy or export it again from "
    "the original",
    "frame_rate": "record at 24-60 fps",
    "av_length": "record video and speech together, or trim the WAV to the video",
    "resolution": "record at 720p or better (short side at least 720 px)",
    "speech": "record at least 60 s of clear, varied speech",
    "snr": "record in a quiet room, close to the microphone, with no music or fans",
    "clipping": "lower the microphone gain so loud words do not distort",
    "motion": "record yourself live on camera, speaking: a still photo or a frozen picture is "
    "not a calibration recording",
    "face_found": "face the camera, frontal, with nothing covering the face, one person only",
    "human_face": "the person enrolling records themselves: the face found does not look like a "
    "human face (an animal, a mask or a picture of one)",
    "one_face": "make sure only one person is in the picture",
    "face_size": "sit closer: the face should fill at least a sixth of the frame's height",
    "frontal": "look straight into the camera while speaking",
    "brightness": "light the face with a uniform front light (e.g. face a window)",
    "side_shadow": "light both sides of the face evenly; avoid a single side lamp",
}


@dataclass(frozen=True)
class CheckResult:
    """One check: passed or not, what was measured, what was required, what to do."""

    name: str
    passed: bool
    measured: str
    threshold: str
    remedy: str


@dataclass(frozen=True)
class RecordingReport:
    """All checks of one recording; `accepted` only if every check passed."""

    video: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> str:
        return json.dumps(
            {
                "video": self.video,
                "accepted": self.accepted,
                "checks": [asdict(c) for c in self.checks],
            },
            indent=2,
        )

    def describe(self) -> str:
        """Human-readable report; failed checks carry their remedy."""
        lines = [f"{'ACCEPTED' if self.accepted else 'REJECTED'}: {self.video}"]
        for c in self.checks:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"  {mark} {c.name:<12} {c.measured} (need {c.threshold})")
            if not c.passed:
                lines.append(f"       remedy: {c.remedy}")
        return "\n".join(lines)


def _check(name: str, passed: bool, measured: str, threshold: str) -> CheckResult:
    return CheckResult(name, bool(passed), measured, threshold, REMEDY[name])


def _audio_checks(
    samples: np.ndarray,
    video_seconds: float,
    cfg: EnrollmentConfig,
) -> list[CheckResult]:
    checks = []
    audio_seconds = len(samples) / SAMPLE_RATE
    mismatch = abs(audio_seconds - video_seconds)
    checks.append(
        _check(
            "av_length",
            mismatch <= cfg.max_av_mismatch_seconds,
            f"audio {audio_seconds:.1f} s vs video {video_seconds:.1f} s",
            f"difference <= {cfg.max_av_mismatch_seconds:g} s",
        )
    )
    # Speech is what silero-vad (a neural VAD; weights in its wheel) hears: music, fans and
    # noise bursts are loud but are not speech.
    speech_seconds = float(speech_frames(samples, SAMPLE_RATE, VAD_FRAME_SECONDS).sum())
    speech_seconds *= VAD_FRAME_SECONDS
    checks.append(
        _check(
            "speech",
            speech_seconds >= cfg.min_speech_seconds,
            f"{speech_seconds:.1f} s of speech detected",
            f">= {cfg.min_speech_seconds:g} s",
        )
    )
    # The signal-to-noise ratio compares loud frames with the quiet ones between them.
    mask = speech_mask(samples, SAMPLE_RATE, VAD_FRAME_SECONDS * 1000)
    hop = int(SAMPLE_RATE * VAD_FRAME_SECONDS)
    frames = samples[: len(mask) * hop].reshape(len(mask), hop) if len(mask) else None
    if frames is not None and mask.any():
        power = np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12
        noise = power[~mask] if (~mask).sum() >= 5 else np.percentile(power, [5])
        snr = 10 * np.log10(power[mask].mean() / max(float(np.mean(noise)), 1e-12))
        checks.append(
            _check("snr", snr >= cfg.min_snr_db, f"{snr:.1f} dB", f">= {cfg.min_snr_db:g} dB")
        )
    else:
        checks.append(_check("snr", False, "no speech to measure", f">= {cfg.min_snr_db:g} dB"))
    # Lossy codecs (AAC) smear clipped plateaus into ringing around full scale, so count samples
    # at or past 98 % of full scale; clean speech peaks well below. Catches gross clipping only.
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL)) if len(samples) else 0.0
    checks.append(
        _check(
            "clipping",
            clipped <= cfg.max_clipped_fraction,
            f"{clipped:.3%} of samples at full scale",
            f"<= {cfg.max_clipped_fraction:.2%}",
        )
    )
    return checks


def _face_checks(
    video: str,
    info: VideoInfo,
    analyzer: FaceAnalyzer,
    cfg: EnrollmentConfig,
) -> list[CheckResult]:
    count = max(1, info.frame_count)
    indices = sorted(set(np.linspace(0, count - 1, min(cfg.sampled_frames, count)).astype(int)))
    frames = read_frames(video, [int(i) for i in indices])
    one, many, heights, yaws, lumas, sides, scores = 0, 0, [], [], [], [], []
    shapes = []
    for frame in frames.values():
        faces = analyzer.detect(frame)
        if len(faces) > 1:
            many += 1
        if len(faces) != 1:
            continue
        one += 1
        face = faces[0]
        scores.append(face.score)
        h, w = frame.shape[:2]
        heights.append((face.box[3] - face.box[1]) / h)
        marks = face.landmarks.astype(np.float64)
        shapes.append((marks - marks.mean(axis=0)) / max(face.box[3] - face.box[1], 1.0))
        yaws.append(abs(head_pose(face.landmarks, (w, h)).yaw))
        luma, side = _face_light(frame, face.landmarks)
        lumas.append(luma)
        sides.append(side)
    n = len(frames)
    checks = [
        _check(
            "face_found",
            one / n >= cfg.min_face_fraction,
            f"one face in {one}/{n} sampled frames ({one / n:.0%})",
            f">= {cfg.min_face_fraction:.0%}",
        ),
        _check(
            "one_face",
            many / n <= 1 - cfg.min_face_fraction,
            f"several faces in {many}/{n} frames",
            f"<= {1 - cfg.min_face_fraction:.0%}",
        ),
    ]
    if not heights:
        return checks
    # A live face moves: the landmarks' shape (position and scale taken out) changes as the
    # person speaks and blinks. A still picture made into a clip keeps one shape (README).
    motion = float(np.stack(shapes).std(axis=0).mean()) if len(shapes) >= 2 else 0.0
    size, yaw = float(np.median(heights)), float(np.median(yaws))
    luma, side = float(np.median(lumas)), float(np.median(sides))
    human = float(np.median(scores))
    checks += [
        # How human the face looks to the detector: an animal's face scores low (README).
        _check(
            "human_face",
            human >= analyzer.human_face,
            f"face detector's median score {human:.2f} ({analyzer.name})",
            f">= {analyzer.human_face:g}",
        ),
        _check(
            "motion",
            motion >= cfg.min_face_motion,
            f"face shape varies {motion:.4f} of face height",
            f">= {cfg.min_face_motion:g}",
        ),
        _check(
            "face_size",
            size >= cfg.min_face_height,
            f"face {size:.0%} of frame height",
            f">= {cfg.min_face_height:.0%}",
        ),
        _check(
            "frontal",
            yaw <= cfg.max_rest_yaw_deg,
            f"median head turn {yaw:.1f} deg",
            f"<= {cfg.max_rest_yaw_deg:g} deg",
        ),
        _check(
            "brightness",
            cfg.min_face_luma <= luma <= cfg.max_face_luma,
            f"face brightness {luma:.0f}/255",
            f"{cfg.min_face_luma:g}..{cfg.max_face_luma:g}",
        ),
        _check(
            "side_shadow",
            side >= cfg.min_side_light_ratio,
            f"darker/brighter half {side:.2f}",
            f">= {cfg.min_side_light_ratio:g}",
        ),
    ]
    return checks


def _face_light(frame: np.ndarray, marks: np.ndarray) -> tuple[float, float]:
    """Mean luma of the cheeks-and-nose region and the darker/brighter half ratio."""
    luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    x0, x1 = int(marks[1, 0]), int(marks[15, 0])
    y0, y1 = int(marks[28, 1]), int(marks[33, 1])
    mid = int(marks[30, 0])
    h, w = luma.shape
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 2 or not x0 < mid < x1:
        return float(luma.mean()), 1.0
    left = float(luma[y0:y1, x0:mid].mean())
    right = float(luma[y0:y1, mid:x1].mean())
    return (left + right) / 2, min(left, right) / max(left, right, 1e-6)


def check_recording(
    video: str | Path,
    analyzer: FaceAnalyzer,
    cfg: EnrollmentConfig,
    audio: str | Path | None = None,
) -> RecordingReport:
    """Run every check on a recording (speech from `audio` if given, else the video's track)."""
    name = str(video)
    try:
        info = probe_video(video)
    except MediaError as exc:
        whole = Path(video).is_file() and Path(video).stat().st_size > 0
        damage = looks_damaged(video) if whole else None
        if damage is not None:
            return RecordingReport(name, [_check("intact", False, damage, "a whole, intact file")])
        return RecordingReport(name, [_check("media", False, str(exc), "a decodable video")])
    damage = looks_damaged(video)
    if damage is not None:  # what a damaged file's frames and audio measure means nothing
        return RecordingReport(name, [_check("intact", False, damage, "a whole, intact file")])
    checks = [
        _check("intact", True, "decodes cleanly", "a whole, intact file"),
        _check(
            "media", True, f"{info.width}x{info.height}, {info.duration:.1f} s", "a decodable video"
        ),
        _check(
            "frame_rate",
            cfg.min_fps <= info.fps <= cfg.max_fps,
            f"{info.fps:g} fps",
            f"{cfg.min_fps:g}..{cfg.max_fps:g} fps",
        ),
        _check(
            "resolution",
            min(info.width, info.height) >= cfg.min_short_side,
            f"{info.width}x{info.height} (short side {min(info.width, info.height)} px)",
            f"short side >= {cfg.min_short_side} px",
        ),
    ]
    try:
        samples = read_audio(audio if audio is not None else video, SAMPLE_RATE)
    except MediaError as exc:
        samples = np.zeros(0, np.float32)
        checks.append(_check("media", False, f"audio: {exc}", "decodable audio"))
    if samples.size == 0:
        checks.append(_check("speech", False, "no audio track", f">= {cfg.min_speech_seconds:g} s"))
    else:
        checks += _audio_checks(samples, info.duration, cfg)
    checks += _face_checks(str(video), info, analyzer, cfg)
    return RecordingReport(name, checks)
