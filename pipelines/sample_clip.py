"""A sample calibration recording built from material that ships with installed packages:
scikit-image's astronaut photo, animated (head sway, mouth following the speech), and speech
from espeak-ng. Used by `cameofarm demo` and the tests on machines without real footage."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.media import write_video, write_wav
from cameofarm.models.reference.lip_sync import viseme_track
from cameofarm.models.reference.voice import EspeakEngine
from cameofarm.models.reference.warp import delaunay, warp_triangles

SAMPLE_TEXT = (
    "Hello, this is my calibration recording for the render farm. I am speaking clearly "
    "and naturally, looking straight at the camera, in a quiet and well lit room. "
    "The quick brown fox jumps over the lazy dog while five wizards box quickly. "
    "Rendering my likeness requires my consent, and I can revoke it at any time. "
    "Thank you for watching this short sample of my voice and my face."
)
# How far each viseme opens the jaw and spreads the lips (fractions of the mouth width).
_MOTION = {
    "rest": (0.0, 0.0),
    "open": (0.55, 0.05),
    "wide": (0.2, 0.12),
    "round": (0.3, -0.15),
    "mid": (0.15, 0.0),
}


def _portrait(size: tuple[int, int]) -> np.ndarray:
    from skimage import data

    photo = data.astronaut()  # 512x512 RGB; the face is near the top-centre
    crop = photo[0:330, 60:420]
    width, height = size
    scale = height / crop.shape[0]
    person = cv2.resize(crop, (int(crop.shape[1] * scale), height), interpolation=cv2.INTER_CUBIC)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (92, 98, 110)
    x0 = (width - person.shape[1]) // 2
    frame[:, x0 : x0 + person.shape[1]] = person
    return frame


def _mouth_target(marks: np.ndarray, vis: str, amount: float) -> np.ndarray:
    jaw_drop, spread = _MOTION[vis]
    width = float(np.linalg.norm(marks[54] - marks[48]))
    out = marks.copy()
    drop = jaw_drop * amount * width
    lower = list(range(55, 60)) + list(range(64, 68)) + list(range(5, 12))
    for k in lower:
        weight = 1.0 if k >= 48 else 0.6
        out[k, 1] += drop * weight
    centre = marks[48:68, 0].mean()
    out[48:68, 0] += (marks[48:68, 0] - centre) * spread * amount
    return out


def build_sample_clip(
    out: str | Path,
    analyzer: FaceAnalyzer,
    seconds: float = 40.0,
    fps: int = 25,
    size: tuple[int, int] = (1280, 720),
    text: str = SAMPLE_TEXT,
) -> Path:
    """Write an MP4 (H.264 + AAC) of the animated astronaut speaking for about `seconds`."""
    base = _portrait(size)
    faces = analyzer.detect(base)
    if not faces:
        raise RuntimeError("sample portrait has no detectable face; dlib models missing?")
    marks = faces[0].landmarks
    h, w = base.shape[:2]
    border = np.array(
        [
            [0, 0],
            [w // 2, 0],
            [w - 1, 0],
            [w - 1, h // 2],
            [w - 1, h - 1],
            [w // 2, h - 1],
            [0, h - 1],
            [0, h // 2],
        ],
        np.float32,
    )
    src_pts = np.vstack([marks, border])
    tris = delaunay(src_pts)

    engine = EspeakEngine()
    speech = engine.speak(text, words_per_minute=150)
    reps = int(np.ceil(seconds / max(speech.duration, 0.1)))
    samples = np.concatenate([speech.samples] * reps)[: int(seconds * speech.sample_rate)]
    n_frames = int(seconds * fps)
    track: list[str] = []
    for _ in range(reps):
        track += viseme_track(speech.phonemes, fps, int(np.ceil(speech.duration * fps)))
    track = (track + ["rest"] * n_frames)[:n_frames]

    # One warped portrait per viseme, then a cheap global head motion per frame.
    variants = {
        vis: np.clip(
            warp_triangles(
                base, src_pts, np.vstack([_mouth_target(marks, vis, 1.0), border]), tris, (h, w)
            ),
            0,
            255,
        ).astype(np.uint8)
        for vis in _MOTION
    }
    centre = tuple(float(v) for v in marks[30])

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            t = i / fps
            rot = cv2.getRotationMatrix2D(centre, 2.5 * np.sin(2 * np.pi * t / 6.0), 1.0)
            rot[:, 2] += (6 * np.sin(2 * np.pi * t / 9.0), 3 * np.sin(2 * np.pi * t / 5.0))
            yield cv2.warpAffine(variants[track[i]], rot, (w, h), borderMode=cv2.BORDER_REPLICATE)

    with tempfile.TemporaryDirectory(prefix="cameofarm-sample-") as tmp:
        wav = write_wav(Path(tmp) / "speech.wav", samples, speech.sample_rate)
        return write_video(frames(), (w, h), fps, out, wav, bitrate_kbps=3000)
