"""Sample recordings built from material that ships with installed packages: public-domain
portraits (scikit-image's astronaut, matplotlib's Grace Hopper), animated (head sway, mouth
following the speech), and speech from flite (Debian's, when installed: a speech recogniser
understands it) or espeak-ng. The astronaut is the demo's cameo; Grace Hopper is the demo's
stand-in actor, a different person for the cameo to be cast onto. Used by `cameofarm demo` and
the tests on machines without real footage."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from cameofarm.configs import EnrollmentConfig
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.media import write_video, write_wav
from cameofarm.models.reference.flite import FliteEngine
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
    "open": (0.3, 0.04),  # stronger jaw drops stretch the photo's teeth into a grimace
    "wide": (0.12, 0.1),
    "round": (0.2, -0.12),
    "mid": (0.1, 0.0),
}


STAND_IN_TEXT = (
    "Good morning, and welcome. In the next few minutes I will walk you through the steps, "
    "one at a time, so that nothing is missed."
)
# Who the built-in portraits show and why they may be used: recorded as a template's rights.
STAND_IN_RIGHTS = (
    "Grace Hopper, official U.S. Navy photograph (public domain), as shipped in matplotlib's "
    "sample data; a built-in stand-in for the demo"
)


def _photo(name: str) -> np.ndarray:
    """A built-in portrait, cropped around its face (RGB)."""
    if name == "astronaut":  # NASA portrait of Eileen Collins, 512x512
        from skimage import data

        return np.asarray(data.astronaut()[0:330, 60:420])
    if name == "hopper":  # U.S. Navy portrait of Grace Hopper, 512 wide x 600 high
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        image = cv2.imread(str(path))
        if image is None:
            raise RuntimeError(f"cannot read matplotlib's sample portrait {path}; reinstall it")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[50:500, 10:502]
    raise ValueError(f"no built-in portrait {name!r} (astronaut, hopper)")


def _portrait(size: tuple[int, int], name: str = "astronaut") -> np.ndarray:
    crop = _photo(name)
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


def _turn_target(marks: np.ndarray, amount: float) -> np.ndarray:
    """Landmarks of the head turned: inner features slide sideways more than the contour.

    amount > 0 slides them toward image right, i.e. the person turns to their own left.
    """
    eye_gap = float(np.linalg.norm(marks[36:42].mean(0) - marks[42:48].mean(0)))
    depth = np.zeros(68, np.float32)
    depth[0:17] = 0.2 - 0.2 * np.abs(np.linspace(-1, 1, 17))
    depth[17:27], depth[27:36], depth[30] = 0.4, 1.0, 1.3
    depth[36:48], depth[48:68] = 0.45, 0.7
    out = marks.copy()
    out[:, 0] += amount * eye_gap * depth
    return out


def _smile_target(marks: np.ndarray, amount: float) -> np.ndarray:
    """Landmarks of a smile: mouth corners pulled out and up, lips following."""
    width = float(np.linalg.norm(marks[54] - marks[48]))
    out = marks.copy()
    centre = marks[48:68].mean(0)
    for k in range(48, 68):
        side = (marks[k, 0] - centre[0]) / (width / 2)
        out[k, 0] += side * 0.14 * amount * width
        out[k, 1] -= abs(side) ** 2 * 0.08 * amount * width
    return out


def _place(
    track: list[tuple[str, float]], start: float, keys: list[tuple[str, float]], fps: int
) -> None:
    first = round(start * fps)
    for k, key in enumerate(keys):
        if 0 <= first + k < len(track):
            track[first + k] = key


def sample_enrollment(cfg: EnrollmentConfig) -> tuple[EnrollmentConfig, str | None]:
    """The enrollment settings a sample recording can meet, and a note when they differ:
    without flite the sample speaks with espeak-ng, whose phrase the recogniser cannot make
    out, so the sample's session then checks only that the phrase is spoken."""
    if not cfg.recognize_phrase or FliteEngine.available():
        return cfg, None
    note = (
        "flite is not installed (`make setup` or `apt-get install flite`): the sample speaks "
        "with espeak-ng, so its liveness phrase is checked for speech, not for its words"
    )
    return cfg.model_copy(update={"recognize_phrase": False}), note


def build_sample_clip(
    out: str | Path,
    analyzer: FaceAnalyzer,
    seconds: float = 40.0,
    fps: int = 25,
    size: tuple[int, int] = (1280, 720),
    text: str = SAMPLE_TEXT,
    challenges: tuple[tuple[str, float, float], ...] = (),
    phrase: str = "",
    portrait: str = "astronaut",
    voice: str = "slt",
) -> Path:
    """Write an MP4 (H.264 + AAC) of the animated `portrait` speaking for about `seconds`.

    With `challenges` ((kind, start, end) windows, as a liveness session issues them) the
    clip first rests, then performs each challenge inside its window (turns and a smile by
    landmark warps, the phrase spoken), then talks freely until the end. It speaks with
    flite's `voice` (slt, rms, awb, kal16) where flite is installed, else with espeak-ng.
    """
    base = _portrait(size, portrait)
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
    engine: EspeakEngine | FliteEngine = (
        FliteEngine(voice) if FliteEngine.available() else EspeakEngine()
    )
    rate = engine.sample_rate
    n_frames = int(seconds * fps)
    samples = np.zeros(int(seconds * rate), np.float32)
    track: list[tuple[str, float]] = [("rest", 0.0)] * n_frames

    def speak_at(start: float, words: str, limit: float, repeat: bool = True) -> None:
        speech = engine.speak(words, words_per_minute=150)
        reps = max(1, int(np.ceil(limit / max(speech.duration, 0.1)))) if repeat else 1
        begin = int(start * rate)
        for r in range(reps):
            offset = start + r * speech.duration
            if offset >= start + limit:
                break
            chunk = speech.samples[: int((start + limit - offset) * rate)]
            at = begin + int(r * speech.duration * rate)
            samples[at : at + len(chunk)] = chunk[: max(0, len(samples) - at)]
            vis = viseme_track(speech.phonemes, fps, int(np.ceil(speech.duration * fps)))
            _place(track, offset, [(v, 0.0) for v in vis], fps)

    free_from = 0.0
    for kind, start, end in challenges:
        length = end - start
        n = round(length * fps)
        ramp = np.sin(np.linspace(0, np.pi, n)) if n else np.zeros(0)
        if kind in ("turn_left", "turn_right"):
            sign = 1.0 if kind == "turn_left" else -1.0
            _place(track, start, [("turn", round(sign * 0.55 * v, 1)) for v in ramp], fps)
        elif kind == "smile":
            _place(track, start, [("smile", round(float(v), 1)) for v in ramp], fps)
        elif kind == "read_phrase":
            speak_at(start + 0.2, phrase or "one two three", length - 0.4, repeat=False)
        free_from = max(free_from, end + 0.5)
    if free_from < seconds:
        speak_at(free_from, text, seconds - free_from)

    cache: dict[tuple[str, float], np.ndarray] = {}

    def variant(key: tuple[str, float]) -> np.ndarray:
        if key not in cache:
            kind, level = key
            if kind == "turn":
                target = _turn_target(marks, level)
            elif kind == "smile":
                target = _smile_target(marks, level)
            else:
                target = _mouth_target(marks, kind, 1.0)
            warped = warp_triangles(base, src_pts, np.vstack([target, border]), tris, (h, w))
            cache[key] = np.clip(warped, 0, 255).astype(np.uint8)
        return cache[key]

    centre = tuple(float(v) for v in marks[30])
    still = bool(challenges)  # keep the head still where yaw is measured against rest

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            t = i / fps
            sway = 0.0 if still and t < free_from else 1.0
            rot = cv2.getRotationMatrix2D(centre, sway * 2.5 * np.sin(2 * np.pi * t / 6.0), 1.0)
            rot[:, 2] += (
                sway * 6 * np.sin(2 * np.pi * t / 9.0),
                sway * 3 * np.sin(2 * np.pi * t / 5.0),
            )
            yield cv2.warpAffine(variant(track[i]), rot, (w, h), borderMode=cv2.BORDER_REPLICATE)

    with tempfile.TemporaryDirectory(prefix="cameofarm-sample-") as tmp:
        wav = write_wav(Path(tmp) / "speech.wav", samples, rate)
        return write_video(frames(), (w, h), fps, out, wav, bitrate_kbps=3000)


def build_stand_in_clip(
    out: str | Path,
    analyzer: FaceAnalyzer,
    seconds: float = 8.0,
    size: tuple[int, int] = (1280, 720),
) -> Path:
    """Write a template scene's clip: the built-in stand-in actor (Grace Hopper) talking, with
    the head swaying, for the demo to cast its cameo onto (see STAND_IN_RIGHTS)."""
    return build_sample_clip(
        out, analyzer, seconds, size=size, text=STAND_IN_TEXT, portrait="hopper"
    )
