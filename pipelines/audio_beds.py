"""Audio beds: music or ambience mixed under a video's dialogue at a set level below the
speech, looped to the video's length and faded in and out.

A bed is checked on upload: it decodes, lasts 1 s to 10 min, is not silent, and carries no
speech (silero-vad hears speech in under 20 % of it) — a real person's voice enters a video
only as a cast cameo's, as their face does. It is stored as a mono WAV at the voice's rate.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import numpy as np
from cameofarm.models.media import MediaError, read_audio, write_wav
from cameofarm.models.reference.voice import SAMPLE_RATE
from cameofarm.storage.objects import ObjectStore

PREFIX = "audio-beds"
MIN_SECONDS = 1.0
MAX_SECONDS = 600.0
MAX_BYTES = 50 * 1024 * 1024
MAX_SPEECH_SHARE = 0.2
SILENT_DBFS = -50.0
DEFAULT_LEVEL_DB = -18.0  # the bed's loudness relative to the speech's
LEVEL_RANGE = (-40.0, -6.0)
FADE_SECONDS = 0.5


class AudioBedError(ValueError):
    """An audio bed that cannot be used; the message says what to change."""


def _dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1e-9))


def check_audio_bed(data: bytes) -> np.ndarray:
    """Decode and check an uploaded bed; return it mono at the voice's rate, or raise
    AudioBedError saying what is wrong."""
    from cameofarm.models.reference.speech import speech_seconds

    if len(data) > MAX_BYTES:
        raise AudioBedError(f"the audio bed is {len(data) >> 20} MiB; the limit is 50 MiB")
    with tempfile.TemporaryDirectory(prefix="cameofarm-bed-") as tmp:
        path = Path(tmp) / "bed"
        path.write_bytes(data)
        try:
            samples = read_audio(path, SAMPLE_RATE)
        except (MediaError, ValueError) as exc:
            why = str(exc).rsplit("cannot decode audio: ", 1)[-1][:200]
            raise AudioBedError(
                f"the audio bed is not audio it can decode (WAV, MP3, AAC, FLAC, OGG): {why}"
            ) from None
    if len(samples) == 0:
        raise AudioBedError("the audio bed holds no audio stream; upload a sound file")
    seconds = len(samples) / SAMPLE_RATE
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise AudioBedError(
            f"the audio bed is {seconds:.1f} s long; use {MIN_SECONDS:g} s to "
            f"{MAX_SECONDS / 60:g} min (it is looped to the video's length)"
        )
    level = _dbfs(samples)
    if level < SILENT_DBFS:
        raise AudioBedError(f"the audio bed is silent ({level:.0f} dBFS); upload the audio itself")
    share = speech_seconds(samples, SAMPLE_RATE) / seconds
    if share >= MAX_SPEECH_SHARE:
        raise AudioBedError(
            f"the audio bed has speech in {share:.0%} of it; a real person's voice enters a "
            "video only as a cast cameo's — use instrumental music or ambience"
        )
    return samples


def store_audio_bed(objects: ObjectStore, data: bytes, owner: str) -> dict[str, object]:
    """Check a bed and store it under its owner; return its id and length."""
    samples = check_audio_bed(data)
    bed_id = "bed_" + uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="cameofarm-bed-") as tmp:
        wav = write_wav(Path(tmp) / "bed.wav", samples, SAMPLE_RATE)
        objects.put_file(bed_key(owner, bed_id), wav, "audio/wav")
    return {"audio_bed_id": bed_id, "seconds": round(len(samples) / SAMPLE_RATE, 2)}


def bed_key(owner: str, bed_id: str) -> str:
    return f"{PREFIX}/{owner}/{bed_id}.wav"


def bed_id(key: str) -> str:
    """The id of the bed stored at `key` (what its uploader and the manifest call it)."""
    return key.rsplit("/", 1)[-1].removesuffix(".wav")


def _speech_level(speech: np.ndarray, sr: int) -> float:
    """The speech's loudness while it speaks: RMS of its louder 50 ms frames (75th percentile)."""
    frame = max(1, int(0.05 * sr))
    n = len(speech) // frame
    if n == 0:
        return float(np.sqrt(np.mean(np.square(speech)))) if len(speech) else 0.0
    rms = np.sqrt(np.mean(np.square(speech[: n * frame].reshape(n, frame)), axis=1))
    return float(np.percentile(rms, 75))


def mix_bed(speech: np.ndarray, sr: int, bed: np.ndarray, level_db: float) -> np.ndarray:
    """The speech with the bed under it at `level_db` relative to the speech's loudness,
    looped to the speech's length, faded in and out; peaks kept under full scale."""
    if not LEVEL_RANGE[0] <= level_db <= LEVEL_RANGE[1]:
        raise ValueError(f"bed level must be {LEVEL_RANGE[0]:g} to {LEVEL_RANGE[1]:g} dB")
    if len(speech) == 0 or len(bed) == 0:
        return speech
    under = np.resize(bed.astype(np.float32), len(speech))  # looped
    bed_rms = float(np.sqrt(np.mean(np.square(bed, dtype=np.float64))))
    gain = _speech_level(speech, sr) * 10 ** (level_db / 20) / max(bed_rms, 1e-9)
    fade = min(int(FADE_SECONDS * sr), len(under) // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        under[:fade] *= ramp
        under[-fade:] *= ramp[::-1]
    mixed = speech.astype(np.float32) + gain * under
    peak = float(np.max(np.abs(mixed)))
    return mixed / peak * 0.99 if peak > 0.99 else mixed
