"""Liveness by challenge-response: a session issues random challenges in a random order, each
with its own time window; the recording must perform each one inside its window.

What it can catch: a static photo or video (no head turns, no smile), a recording made for
another session (the order and windows differ, and the phrase with its nonce is recognised by
an offline speech recogniser; a byte-identical replay is refused outright), a missing or late
motion, a wrong phrase. What it cannot: a deepfake driven live in real time could perform the
challenges; the recogniser hears English only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.configs import EnrollmentConfig
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.media import probe_video, read_audio, read_frames
from cameofarm.models.reference.lip_sync import mouth_features
from cameofarm.models.reference.pose import head_pose
from cameofarm.models.reference.recognizer import PhraseRecognizer, word_errors
from cameofarm.models.reference.voice import SAMPLE_RATE, speech_mask

CHALLENGES = ("turn_left", "turn_right", "smile", "read_phrase")
PROMPTS = {
    "turn_left": "turn your head to your left, then back",
    "turn_right": "turn your head to your right, then back",
    "smile": "smile broadly, then relax",
    "read_phrase": "read the phrase aloud",
}
# Words the phrase recogniser tells apart from each other and from the digits. ("orbit" was
# heard as "harbor eight" in 4 of 25 flite phrases; "glacier" in none of 25, and no word here
# gave more than one error in 400 phrases.)
_WORDS = (
    "amber",
    "river",
    "falcon",
    "maple",
    "copper",
    "harbor",
    "violet",
    "summit",
    "canyon",
    "meadow",
    "lantern",
    "glacier",
    "pepper",
    "saddle",
    "tundra",
    "willow",
)
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_FPS = 8.0


@dataclass(frozen=True)
class Challenge:
    kind: str
    start: float
    end: float
    prompt: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "prompt": self.prompt}


@dataclass(frozen=True)
class ChallengePlan:
    nonce: str
    phrase: str
    challenges: tuple[Challenge, ...]


@dataclass(frozen=True)
class ChallengeResult:
    kind: str
    passed: bool
    detail: str


def plan_challenges(
    cfg: EnrollmentConfig,
    rng: secrets.SystemRandom | None = None,
) -> ChallengePlan:
    """Draw a nonce, a phrase containing it, and the challenges in a random order."""
    rng = rng or secrets.SystemRandom()
    nonce = "".join(rng.choice("0123456789") for _ in range(4))
    words = rng.sample(_WORDS, 3)
    phrase = f"{words[0]} {words[1]} {' '.join(_DIGITS[int(d)] for d in nonce)} {words[2]}"
    order = list(CHALLENGES)
    rng.shuffle(order)
    t = cfg.lead_seconds
    challenges = []
    for kind in order:
        prompt = PROMPTS[kind] + (f': "{phrase}"' if kind == "read_phrase" else "")
        challenges.append(Challenge(kind, t, t + cfg.challenge_seconds, prompt))
        t += cfg.challenge_seconds
    return ChallengePlan(nonce, phrase, tuple(challenges))


def recording_hash(video: str | Path) -> str:
    """SHA-256 of the recording's bytes (a replayed file is refused by this)."""
    digest = hashlib.sha256()
    with open(video, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class MotionTrack:
    """Per sampled frame: time, head yaw (deg, NaN if no face) and mouth width ratio."""

    times: np.ndarray
    yaw: np.ndarray
    smile: np.ndarray
    speech_times: np.ndarray  # centre times of VAD frames with speech
    audio: np.ndarray  # the recording's first seconds, mono, at SAMPLE_RATE


def measure(video: str | Path, analyzer: FaceAnalyzer, until: float) -> MotionTrack:
    """Track yaw and mouth width at SAMPLE_FPS over the first `until` seconds, and speech."""
    info = probe_video(video)
    step = max(1, round(info.fps / SAMPLE_FPS))
    last = min(info.frame_count, int(until * info.fps) + 1)
    indices = list(range(0, last, step))
    frames = read_frames(video, indices)
    times, yaws, smiles = [], [], []
    for i in indices:
        frame = frames[i]
        faces = analyzer.detect(frame)
        times.append(i / info.fps)
        if not faces:
            yaws.append(np.nan)
            smiles.append(np.nan)
            continue
        marks = faces[0].landmarks
        yaws.append(head_pose(marks, (frame.shape[1], frame.shape[0])).yaw)
        smiles.append(mouth_features(marks)[1])
    samples = read_audio(video, SAMPLE_RATE)[: int(until * SAMPLE_RATE)]
    mask = speech_mask(samples, SAMPLE_RATE, 30.0) if samples.size else np.zeros(0, bool)
    speech = (np.flatnonzero(mask) + 0.5) * 0.03
    return MotionTrack(np.array(times), np.array(yaws), np.array(smiles), speech, samples)


def _window(track: MotionTrack, start: float, end: float) -> np.ndarray:
    return (track.times >= start) & (track.times < end)


def _speech_share(track: MotionTrack, start: float, end: float) -> float:
    hits = ((track.speech_times >= start) & (track.speech_times < end)).sum()
    return float(hits * 0.03 / max(end - start, 1e-6))


def phrase_vocabulary() -> tuple[str, ...]:
    """Every word a phrase can contain: what the recogniser listens for."""
    return _WORDS + _DIGITS


def hear_phrase(
    track: MotionTrack, window: Challenge, phrase: str, recognizer: PhraseRecognizer, slack: float
) -> tuple[int, list[str]]:
    """Recognise the phrase window (widened by slack s): the word errors against the phrase
    and the words heard."""
    start = max(0, int((window.start - slack) * SAMPLE_RATE))
    end = int((window.end + slack) * SAMPLE_RATE)
    heard = recognizer.hear(track.audio[start:end], SAMPLE_RATE)
    return word_errors(phrase.split(), heard), heard


def verify_challenges(
    track: MotionTrack,
    challenges: tuple[Challenge, ...],
    cfg: EnrollmentConfig,
    phrase: str = "",
    recognizer: PhraseRecognizer | None = None,
) -> list[ChallengeResult]:
    """Check each challenge happened inside its own window, in the issued order; with a
    recogniser, that the phrase's words were said in its window."""
    rest = _window(track, 0.0, cfg.lead_seconds) & ~np.isnan(track.yaw)
    if rest.sum() < 2:
        return [
            ChallengeResult(
                "rest", False, f"no face during the first {cfg.lead_seconds:g} s at rest"
            )
        ]
    yaw0 = float(np.median(track.yaw[rest]))
    smile0 = float(np.median(track.smile[rest]))
    speech_elsewhere = [
        _speech_share(track, c.start, c.end) for c in challenges if c.kind != "read_phrase"
    ]
    results = []
    for c in challenges:
        sel = _window(track, c.start, c.end)
        others = np.zeros_like(sel)
        for o in challenges:
            if o.kind != c.kind:
                others |= _window(track, o.start, o.end)
        where = f"{c.start:g}-{c.end:g} s"
        if c.kind in ("turn_left", "turn_right"):
            sign = -1.0 if c.kind == "turn_left" else 1.0
            turn = sign * (track.yaw - yaw0)
            inside = float(np.nanmax(turn[sel])) if np.any(sel & ~np.isnan(turn)) else 0.0
            outside = float(np.nanmax(turn[others])) if np.any(others & ~np.isnan(turn)) else 0.0
            ok = inside >= cfg.min_turn_deg and outside < cfg.min_turn_deg
            results.append(
                ChallengeResult(
                    c.kind,
                    ok,
                    (
                        f"turned {inside:.1f} deg in its window {where} "
                        f"(need {cfg.min_turn_deg:g}); "
                        f"{outside:.1f} deg in other windows (need < {cfg.min_turn_deg:g})"
                    ),
                )
            )
        elif c.kind == "smile":
            gain = track.smile / max(smile0, 1e-6) - 1.0
            inside = float(np.nanmax(gain[sel])) if np.any(sel & ~np.isnan(gain)) else 0.0
            outside = float(np.nanmax(gain[others])) if np.any(others & ~np.isnan(gain)) else 0.0
            # Speaking widens the mouth too: the smile must stand clearly above every other window.
            ok = inside >= cfg.min_smile_gain and inside >= outside + cfg.min_smile_gain / 2
            results.append(
                ChallengeResult(
                    c.kind,
                    ok,
                    (
                        f"mouth {inside:+.0%} wider in its window {where} (need "
                        f"{cfg.min_smile_gain:+.0%}); {outside:+.0%} in other windows"
                    ),
                )
            )
        else:
            share = _speech_share(track, c.start, c.end)
            elsewhere = max(speech_elsewhere) if speech_elsewhere else 0.0
            ok = share >= cfg.min_phrase_speech and share >= elsewhere + 0.2
            detail = (
                f"speech in {share:.0%} of its window {where} (need "
                f"{cfg.min_phrase_speech:.0%}, and more than in the motion windows: "
                f"{elsewhere:.0%})"
            )
            if recognizer is not None and phrase:
                errors, heard = hear_phrase(track, c, phrase, recognizer, 0.5)
                ok = ok and errors <= cfg.max_phrase_word_errors
                detail += (
                    f'; heard "{" ".join(heard) or "(no phrase words)"}" for "{phrase}": '
                    f"{errors} word error{'s' if errors != 1 else ''} (need <= "
                    f"{cfg.max_phrase_word_errors})"
                )
            results.append(ChallengeResult(c.kind, ok, detail))
    return results
