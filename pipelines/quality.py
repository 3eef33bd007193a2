"""How good an output is, measured the way the field measures it. Voice: speaker similarity,
by the farm's speaker encoder (enrollment.speaker_encoder: GE2E on the reference path, TitaNet
on the NeMo path), of the rendered speech to the cameo's enrolled speech, and of the
un-converted base voice (flite or espeak-ng speaking the same script) to the cameo — the
conversion must add clearly more than the stock voice already has.

Stored with each job (`quality` on the job) and recomputed from any published video by
`cameofarm quality VIDEO`.

Each report says whether the voice meets the farm's targets (`TARGETS`): set for the encoder
they were measured with (GE2E: >= 0.75 to the cameo, >= the stock voice + 0.1); another
encoder's figures are reported without a verdict, since its similarities run on another
scale.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.cameos import CameoRecord
from cameofarm.configs import EnrollmentConfig
from cameofarm.models.contracts import SpeakerEncoder
from cameofarm.models.data import SpeechTrack
from cameofarm.models.media import read_audio
from cameofarm.models.reference.speech import Ge2eSpeakerEncoder, similarity
from cameofarm.models.reference.unit_voice import (
    CLEAR_WORDS,
    GAIN,
    TO_CAMEO,
    base_speech,
    clear,
    meets,
)
from cameofarm.models.reference.voice import SAMPLE_RATE
from cameofarm.models.store import ModelStore
from cameofarm.pipelines.extractors import speaker_encoder
from cameofarm.storage.fetch import ObjectFetcher
from cameofarm.storage.objects import ObjectStore

# The farm's voice targets (to the cameo, gain over the stock voice), by the speaker encoder
# they were measured with (README, "Voice").
TARGETS = {Ge2eSpeakerEncoder.name: (TO_CAMEO, GAIN)}


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

    @property
    def meets_targets(self) -> bool | None:
        """Whether the voice meets the farm's targets; None: none are set for this encoder."""
        if self.encoder not in TARGETS:
            return None
        return meets(self.to_cameo, self.gain, TARGETS[self.encoder])

    @property
    def clear(self) -> bool | None:
        """Whether a recogniser follows the words (`unit_voice.clear`); None: not measured
        (a language the recogniser does not know)."""
        if self.words_recovered is None:
            return None
        return clear(self.words_recovered, self.base_words_recovered)

    def to_dict(self) -> dict[str, Any]:
        figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        targets = TARGETS.get(self.encoder)
        judged_by = None if targets is None else {"to_cameo": targets[0], "gain": targets[1]}
        verdicts = {"meets_targets": self.meets_targets, "clear": self.clear}
        return {**figures, **verdicts, "targets": judged_by}

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
        return text + verdict(self.to_dict())


def verdict(report: dict[str, Any]) -> str:
    """A voice report's verdicts, to append to its figures: against the targets it was judged
    by, and whether its words can be followed ("" for a report stored before verdicts)."""
    if report.get("clear") is False:
        return _likeness(report) + (
            f"; HARD TO FOLLOW (a recogniser recovers under {CLEAR_WORDS:.0%} of the words, "
            "and fewer than from the stock voice)"
        )
    return _likeness(report)


def _likeness(report: dict[str, Any]) -> str:
    if "meets_targets" not in report:
        return ""
    targets = report.get("targets")
    if report["meets_targets"] is None or not targets:
        return f"; no targets are set for {report.get('encoder')} (the farm's are GE2E's)"
    bar = (
        f"the farm's voice targets (>= {targets['to_cameo']:g} to the cameo, "
        f">= stock + {targets['gain']:g})"
    )
    return f"; meets {bar}" if report["meets_targets"] else f"; BELOW {bar}"


@dataclass(frozen=True)
class EnrolledVoice:
    """Where a cameo's enrolled speech is: its embeddings in the cameo's summary (by encoder
    name), else its stored speech or recording. Small: it goes with the call to the measuring
    process."""

    voices: dict[str, list[float]]
    assets_key: str
    recording_key: str

    @classmethod
    def of(cls, cameo: CameoRecord) -> EnrolledVoice:
        voices = dict(cameo.summary.get("voices") or {})
        return cls(voices, cameo.assets_key, cameo.recording_key)


def enrolled_voice(
    objects: ObjectStore, cameo: EnrolledVoice, encoder: SpeakerEncoder
) -> np.ndarray:
    """The cameo's enrolled speech embedded by the encoder: from its summary, or (a cameo
    enrolled with another encoder) from its stored speech."""
    stored = cameo.voices.get(encoder.name)
    if stored is not None:
        return np.asarray(stored, np.float32)
    with tempfile.TemporaryDirectory(prefix="cameofarm-quality-") as tmp:
        speech_key = f"{cameo.assets_key}/speech.wav"
        key = speech_key if objects.exists(speech_key) else cameo.recording_key
        local = objects.get_file(key, Path(tmp) / Path(key).name)
        samples = read_audio(local, SAMPLE_RATE)
    return encoder.embed(samples, SAMPLE_RATE)


@dataclass(frozen=True)
class StockVoice:
    """The stock voice saying a script, as a report compares with it: its speaker embedding,
    and the share of the script's words a recogniser recovers from it (None: not English).
    The same for every cameo: a measuring process keeps it for scripts said again (a
    batch's)."""

    embedding: np.ndarray
    words_recovered: float | None


def stock_voice(script: str, language: str, encoder: SpeakerEncoder) -> StockVoice:
    from cameofarm.models.reference.recognizer import recovered, transcribe

    base = base_speech(script, language, timed=False)
    words = None
    if language == "en":
        words = recovered(script, transcribe(base.samples, base.sample_rate))
    return StockVoice(encoder.embed(base.samples, base.sample_rate), words)


StockOf = Callable[[str, str, SpeakerEncoder], StockVoice]


def voice_report(
    objects: ObjectStore,
    cameo: EnrolledVoice,
    speech: SpeechTrack,
    script: str,
    language: str,
    encoder: SpeakerEncoder,
    stock_of: StockOf = stock_voice,
) -> dict[str, Any]:
    """A rendered speech's report (VoiceQuality as a dict), or why it could not be measured
    (e.g. under a second of speech: too little to tell who speaks)."""
    try:
        enrolled = enrolled_voice(objects, cameo, encoder)
        stock = stock_of(script, language, encoder)
        report = voice_quality(
            speech.samples, speech.sample_rate, script, language, enrolled, encoder, stock
        )
    except ValueError as exc:
        return {"encoder": encoder.name, "unmeasured": str(exc)}
    return report.to_dict()


def dialogue_report(
    lines: Sequence[SpeechTrack], speakers: Sequence[int], encoder: SpeakerEncoder
) -> dict[str, Any]:
    """Whether a dialogue's voices are told apart: the speaker similarity of the two cameos'
    speech, against that of the two halves of each cameo's own speech."""
    rate = lines[0].sample_rate
    own = [
        np.concatenate([t.samples for t, who in zip(lines, speakers, strict=True) if who == k])
        for k in sorted(set(speakers))
    ]
    try:
        between = similarity(encoder.embed(own[0], rate), encoder.embed(own[1], rate))
        within = []
        for samples in own:
            half = len(samples) // 2
            first, second = encoder.embed(samples[:half], rate), encoder.embed(samples[half:], rate)
            within.append(round(similarity(first, second), 4))
    except ValueError as exc:  # a cameo's half of the dialogue is under a second of speech
        return {"encoder": encoder.name, "unmeasured": str(exc)}
    return {"encoder": encoder.name, "between_speakers": round(between, 4), "within": within}


def voice_quality(
    samples: np.ndarray,
    sample_rate: int,
    script: str,
    language: str,
    enrolled: np.ndarray,
    encoder: SpeakerEncoder | None = None,
    stock: StockVoice | None = None,
) -> VoiceQuality:
    """Score rendered speech against the cameo's enrolled voice and the stock voice (`stock`:
    the stock voice saying `script`, measured already)."""
    from cameofarm.models.reference.recognizer import recovered, transcribe

    encoder = encoder or Ge2eSpeakerEncoder()
    stock = stock or stock_voice(script, language, encoder)
    output = encoder.embed(samples, sample_rate)
    words = None
    if language == "en":
        words = recovered(script, transcribe(samples, sample_rate))
    return VoiceQuality(
        encoder.name,
        similarity(output, enrolled),
        similarity(stock.embedding, enrolled),
        similarity(output, stock.embedding),
        len(samples) / sample_rate,
        words,
        stock.words_recovered,
    )


# --- measured in a process of its own (StagePools.elsewhere) ---------------------------------

STOCK_SCRIPTS = 256  # scripts whose stock voice a measuring process keeps measured

_ENCODERS: dict[str, SpeakerEncoder] = {}


def _encoder(fetcher: ObjectFetcher, cfg: EnrollmentConfig) -> tuple[str, SpeakerEncoder]:
    """The farm's speaker encoder and its key, loaded once per measuring process (its model,
    if any, from the model store)."""
    key = cfg.speaker_encoder.model_dump_json()
    if key not in _ENCODERS:
        store = ModelStore(fetcher.store)
        _ENCODERS[key] = speaker_encoder(cfg, store, Path(fetcher.data_dir) / "keys")
    return key, _ENCODERS[key]


@functools.lru_cache(maxsize=STOCK_SCRIPTS)
def _stock_said(script: str, language: str, encoder: str) -> StockVoice:
    return stock_voice(script, language, _ENCODERS[encoder])


def measure_voice(
    fetcher: ObjectFetcher,
    enrollment: EnrollmentConfig,
    speech: SpeechTrack,
    script: str,
    language: str,
    cameo: EnrolledVoice,
) -> dict[str, Any]:
    """A rendered speech's voice report (see voice_report) by the farm's speaker encoder
    (`enrollment.speaker_encoder`); the stock voice saying a script is measured once per
    process (a batch's script said by many cameos)."""
    key, encoder = _encoder(fetcher, enrollment)
    return voice_report(
        fetcher.store,
        cameo,
        speech,
        script,
        language,
        encoder,
        lambda s, lang, _: _stock_said(s, lang, key),
    )


def measure_dialogue(
    fetcher: ObjectFetcher, enrollment: EnrollmentConfig, speakers: list[int], *lines: SpeechTrack
) -> dict[str, Any]:
    """Whether a dialogue's two voices are told apart (see dialogue_report)."""
    return dialogue_report(lines, speakers, _encoder(fetcher, enrollment)[1])
