"""Speech models whose weights ship inside their wheels, so they run on any fresh CPU machine:
silero-vad finds where someone speaks, resemblyzer's GE2E encoder says who.

Both are small (2 MB and 17 MB) and load once per process. Measured on the fixtures' real
speech (README, "Voice"): 5 s speech-only stretches of one man are at most 0.27 GE2E cosine
distance apart; another real speaker and espeak-ng are at least 0.38 away.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

VAD_RATE = 16000  # both models work on 16 kHz audio
_lock = threading.Lock()
_models: dict[str, Any] = {}


def to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float audio resampled to the 16 kHz these models (and pocketsphinx) take."""
    samples = np.asarray(samples, np.float32).reshape(-1)
    if sample_rate == VAD_RATE or samples.size == 0:
        return samples
    from scipy.signal import resample_poly

    g = int(np.gcd(sample_rate, VAD_RATE))
    return resample_poly(samples, VAD_RATE // g, sample_rate // g).astype(np.float32)


def _vad() -> Any:
    with _lock:
        if "vad" not in _models:
            from silero_vad import load_silero_vad

            _models["vad"] = load_silero_vad()
        return _models["vad"]


def pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """16 kHz, 16-bit little-endian PCM bytes, as pocketsphinx reads them."""
    audio = to_16k(samples, sample_rate)
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def speech_segments(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of speech silero-vad finds."""
    import torch
    from silero_vad import get_speech_timestamps

    audio = to_16k(samples, sample_rate)
    if audio.size < VAD_RATE // 10:
        return []
    model = _vad()
    with _lock, torch.no_grad():  # the model keeps recurrent state: one caller at a time
        found = get_speech_timestamps(torch.from_numpy(audio), model, sampling_rate=VAD_RATE)
    return [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in found]


def speech_seconds(samples: np.ndarray, sample_rate: int) -> float:
    """Seconds of speech in the audio."""
    return float(sum(end - start for start, end in speech_segments(samples, sample_rate)))


def speech_frames(samples: np.ndarray, sample_rate: int, frame_seconds: float) -> np.ndarray:
    """One flag per frame of frame_seconds: does the frame's centre fall inside speech?"""
    count = int(len(samples) / sample_rate / frame_seconds)
    centres = (np.arange(count) + 0.5) * frame_seconds
    mask = np.zeros(count, bool)
    for start, end in speech_segments(samples, sample_rate):
        mask |= (centres >= start) & (centres < end)
    return mask


def only_speech(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 16 kHz audio with everything that is not speech cut out."""
    audio = to_16k(samples, sample_rate)
    parts = [
        audio[int(a * VAD_RATE) : int(b * VAD_RATE)] for a, b in speech_segments(audio, VAD_RATE)
    ]
    return np.concatenate(parts) if parts else audio[:0]


def _ge2e() -> Any:
    with _lock:
        if "ge2e" not in _models:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # webrtcvad imports the deprecated pkg_resources
                from resemblyzer import VoiceEncoder

            _models["ge2e"] = VoiceEncoder("cpu", verbose=False)
        return _models["ge2e"]


class Ge2eSpeakerEncoder:
    """resemblyzer's GE2E speaker encoder (weights in its wheel) on the speech alone, at a
    fixed loudness: a 256-d unit vector; cosine distance tells speakers apart."""

    name = "resemblyzer:ge2e@1"
    min_speech_seconds = 1.0

    def __init__(self, same_speaker: float = 0.32) -> None:
        self.same_speaker = same_speaker

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embed the speech in samples; raises ValueError if there is under 1 s of it."""
        import torch

        speech = only_speech(samples, sample_rate)
        if len(speech) < self.min_speech_seconds * VAD_RATE:
            raise ValueError(
                f"{len(speech) / VAD_RATE:.1f} s of speech is too little to tell who speaks "
                f"(need {self.min_speech_seconds:g} s)"
            )
        speech = speech * (0.1 / (float(np.sqrt(np.mean(speech**2))) + 1e-9))
        encoder = _ge2e()
        with torch.no_grad():
            vector = encoder.embed_utterance(speech.astype(np.float32))
        return np.asarray(vector, np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two speaker embeddings (1 = same direction)."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
    return float(np.dot(a, b)) / denom
