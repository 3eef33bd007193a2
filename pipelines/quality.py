"""How good an output is, measured the way the field measures it. Voice: GE2E speaker
similarity of the rendered speech to the cameo's enrolled speech, and of the un-converted
base voice (flite or espeak-ng speaking the same script) to the cameo — the conversion must add
clearly more than the stock voice already has.

Stored with each job (`quality` on the job) and recomputed from any published video by
`cameofarm quality VIDEO`.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.cameos import CameoRecord
from cameofarm.models.media import read_audio
from cameofarm.models.reference.speech import Ge2eSpeakerEncoder, similarity
from cameofarm.models.reference.unit_voice import base_speech
from cameofarm.models.reference.voice import SAMPLE_RATE
from cameofarm.storage import FarmStorage


@dataclass(frozen=True)
class VoiceQuality:
    """Cosine similarities (1 = same voice) by one speaker encoder."""

    encoder: str
    to_cameo: float  # the output's speech to the cameo's enrolled speech
    base_to_cameo: float  # the stock voice saying the same script, to the cameo
    to_base: float  # the output to the stock voice: how much of it is left
    speech_seconds: float
    # Share of the script's words an offline recogniser (pocketsphinx, English only) recovers
    # from the output and from the stock voice; None for other languages.
    words_recovered: float | None = None
    base_words_recovered: float | None = None

    @property
    def gain(self) -> float:
        """What the cameo's voice adds over the stock voice."""
        return self.to_cameo - self.base_to_cameo

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        text = (
            f"voice ({self.encoder}): {self.to_cameo:.3f} similar to the cameo's enrolled "
            f"speech; the stock voice saying the same script {self.base_to_cameo:.3f} (gain "
            f"{self.gain:+.3f}); output to stock voice {self.to_base:.3f}; "
            f"{self.speech_seconds:.1f} s of speech"
        )
        if self.words_recovered is not None and self.base_words_recovered is not None:
            text += (
                f"; a recogniser recovers {self.words_recovered:.0%} of the script's words "
                f"(stock voice {self.base_words_recovered:.0%})"
            )
        return text


def enrolled_voice(
    storage: FarmStorage, cameo: CameoRecord, encoder: Ge2eSpeakerEncoder
) -> np.ndarray:
    """The cameo's enrolled speech embedded by the encoder: from its summary, or (a cameo
    enrolled with another encoder) from its stored speech."""
    stored = (cameo.summary.get("voices") or {}).get(encoder.name)
    if stored is not None:
        return np.asarray(stored, np.float32)
    with tempfile.TemporaryDirectory(prefix="cameofarm-quality-") as tmp:
        speech_key = f"{cameo.assets_key}/speech.wav"
        key = speech_key if storage.objects.exists(speech_key) else cameo.recording_key
        local = storage.objects.get_file(key, Path(tmp) / Path(key).name)
        samples = read_audio(local, SAMPLE_RATE)
    return encoder.embed(samples, SAMPLE_RATE)


def voice_quality(
    samples: np.ndarray,
    sample_rate: int,
    script: str,
    language: str,
    enrolled: np.ndarray,
    encoder: Ge2eSpeakerEncoder | None = None,
) -> VoiceQuality:
    """Score rendered speech against the cameo's enrolled voice and the stock voice."""
    from cameofarm.models.reference.recognizer import recovered, transcribe

    encoder = encoder or Ge2eSpeakerEncoder()
    output = encoder.embed(samples, sample_rate)
    base = base_speech(script, language, timed=False)
    stock = encoder.embed(base.samples, base.sample_rate)
    words = base_words = None
    if language == "en":
        words = recovered(script, transcribe(samples, sample_rate))
        base_words = recovered(script, transcribe(base.samples, base.sample_rate))
    return VoiceQuality(
        encoder.name,
        similarity(output, enrolled),
        similarity(stock, enrolled),
        similarity(output, stock),
        len(samples) / sample_rate,
        words,
        base_words,
    )
