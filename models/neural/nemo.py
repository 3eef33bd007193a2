"""Voice on NeMo: FastPitch speaks the script conditioned on a mel spectrogram of the cameo's
own enrolled speech (its reference encoder: global style tokens), HiFi-GAN turns the mel
into audio, and FastPitch's token durations give the word and phoneme timings lip sync
needs. Both load from their published .nemo files in the model store."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from cameofarm.models.contracts import VoiceProfiler
from cameofarm.models.data import (
    AnyVoiceProfile,
    PhonemeTiming,
    SpeakerReference,
    SpeechTrack,
    WordTiming,
)
from cameofarm.models.registry import BackendContext, ModelFiles

log = logging.getLogger(__name__)
# The English FastPitch recipe the farm loads: its text front end (G2P) is English.
NEMO_LANGUAGES = ("en",)


REFERENCE_SECONDS = 12.0  # speech kept for the reference mel: what style encoders are fed


def _restore(kind: str, model: ModelFiles, device: str) -> Any:
    """A NeMo model from its .nemo file, checked to be the expected class, in eval mode."""
    from nemo.collections.tts import models as tts

    path = str(model.path(".nemo"))
    cls = getattr(tts, kind)
    try:
        loaded = cls.restore_from(path, map_location=device)
    except Exception as exc:  # NeMo raises many kinds; the message says which model failed
        raise ValueError(
            f"model {model.name}@{model.version} did not load as {kind}: {exc}"
        ) from exc
    if not isinstance(loaded, cls):
        raise ValueError(
            f"model {model.name}@{model.version} is a {type(loaded).__name__}, not a {kind}: "
            "import the right .nemo file under this role"
        )
    return loaded.eval()


def reference_profiler(ctx: BackendContext) -> FastPitchReferenceProfiler:
    """The profiler for a FastPitch model (enrollment's `voice_profiler: {backend: nemo}`)."""
    model = ctx.model("spectrogram", "nemo")
    return FastPitchReferenceProfiler(_restore("FastPitchModel", model, ctx.device), model)


# TitaNet's published verification threshold is cosine similarity 0.7; as a distance, 0.3.
TITANET_SAME_SPEAKER = 0.3


class TitanetSpeakerEncoder:
    """NeMo's TitaNet (EncDecSpeakerLabelModel): an L2-normalised speaker embedding."""

    def __init__(self, ctx: BackendContext) -> None:
        import torch
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        if ctx.device == "cpu":
            torch.set_num_threads(1)
        model = ctx.model("speaker", "nemo")
        try:
            loaded = EncDecSpeakerLabelModel.restore_from(
                str(model.path(".nemo")), map_location=ctx.device
            )
        except Exception as exc:
            raise ValueError(
                f"model {model.name}@{model.version} is not a speaker model: {exc}"
            ) from exc
        self.model = loaded.eval()
        self.name = f"titanet:{model.name}@{model.version}"
        self.sample_rate = int(loaded.cfg.preprocessor.sample_rate)
        self.same_speaker = ctx.same_person or TITANET_SAME_SPEAKER

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = _resample(samples, sample_rate, self.sample_rate)
        embedding, _ = self.model.infer_segment(audio)
        vector = embedding[0].float().cpu().numpy()
        return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)


def _resample(samples: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if sr_from == sr_to:
        return samples.astype(np.float32)
    g = np.gcd(int(sr_from), int(sr_to))
    return resample_poly(samples.astype(np.float64), sr_to // g, sr_from // g).astype(np.float32)


class FastPitchReferenceProfiler:
    """A cameo's voice for FastPitch: the log-mel of up to 12 s of its enrolled speech (pauses
    cut), in the FastPitch model's own features."""

    def __init__(self, fastpitch: Any, model: ModelFiles) -> None:
        self.model = fastpitch
        self.name = f"nemo-reference:{model.name}@{model.version}"
        self.sample_rate = int(fastpitch.cfg.preprocessor.sample_rate)

    def profile(self, samples: np.ndarray, sample_rate: int) -> AnyVoiceProfile:
        import torch
        from cameofarm.models.reference.voice import speech_mask

        hop = int(sample_rate * 0.03)
        mask = speech_mask(samples, sample_rate)
        speech = np.concatenate(
            [samples[i * hop : (i + 1) * hop] for i in np.flatnonzero(mask)] or [samples[:0]]
        )
        if len(speech) < sample_rate:
            raise ValueError("less than 1 s of speech in the enrolled recording; need clear speech")
        speech = _resample(
            speech[: int(REFERENCE_SECONDS * sample_rate)], sample_rate, self.sample_rate
        )
        signal = torch.from_numpy(speech)[None].to(self.model.device)
        with torch.inference_mode():
            mel, _ = self.model.preprocessor(
                input_signal=signal, length=torch.tensor([len(speech)], device=self.model.device)
            )
        return SpeakerReference(self.name, self.sample_rate, mel[0].float().cpu().numpy())


class NemoVoice:
    """FastPitch + HiFi-GAN, conditioned on the cameo's reference mel."""

    def __init__(self, ctx: BackendContext) -> None:
        import torch

        if ctx.device == "cpu":
            torch.set_num_threads(1)  # replicas are the unit of parallelism (see StageActor)
        spec_model, vocoder_model = ctx.model("spectrogram", "nemo"), ctx.model("vocoder", "nemo")
        self.fastpitch = _restore("FastPitchModel", spec_model, ctx.device)
        self.vocoder = _restore("HifiGanModel", vocoder_model, ctx.device)
        self.sample_rate = int(self.fastpitch.cfg.preprocessor.sample_rate)
        vocoder_rate = int(self.vocoder.cfg.preprocessor.sample_rate)
        if vocoder_rate != self.sample_rate:
            raise ValueError(
                f"{spec_model.name} makes {self.sample_rate} Hz mels but {vocoder_model.name} "
                f"vocodes {vocoder_rate} Hz: pick a vocoder trained for the same features"
            )
        self.hop_seconds = int(self.fastpitch.cfg.preprocessor.n_window_stride) / self.sample_rate
        self.profiler: VoiceProfiler = FastPitchReferenceProfiler(self.fastpitch, spec_model)
        self.provider = f"nemo torch {torch.__version__} {ctx.device}"

    def _symbols(self, tokens: list[int]) -> list[str]:
        vocab = getattr(self.fastpitch, "vocab", None)
        table = list(vocab.tokens) if vocab is not None else list(self.fastpitch.cfg.labels)
        return [table[t] if 0 <= t < len(table) else "" for t in tokens]

    def languages(self) -> tuple[str, ...]:
        return NEMO_LANGUAGES

    def synthesize(
        self, script: str, profile: AnyVoiceProfile, language: str = "en", emotion: str = "neutral"
    ) -> SpeechTrack:
        """Speak the script in the profile's voice; timings from the predicted durations; the
        emotion's pitch level and range applied after (WORLD re-voicing, same length)."""
        import torch
        from cameofarm.models.reference.voice import apply_emotion, clean_script, prosody

        prosody(emotion)  # an unknown emotion is refused before the model runs

        if language not in NEMO_LANGUAGES:
            raise ValueError(f"the NeMo FastPitch voice speaks {NEMO_LANGUAGES}, not {language!r}")
        if not isinstance(profile, SpeakerReference) or profile.profiler != self.profiler.name:
            raise ValueError(f"the NeMo voice needs a {self.profiler.name} profile")
        device = self.fastpitch.device
        tokens = self.fastpitch.parse(clean_script(script))
        reference = torch.from_numpy(profile.mel)[None].to(device)
        with torch.inference_mode():
            spect, _, durations, *_ = self.fastpitch(
                text=tokens,
                durs=None,
                pitch=None,
                speaker=None,
                pace=1.0,
                reference_spec=reference,
                reference_spec_lens=torch.tensor([reference.shape[2]], device=device),
            )
            audio = self.vocoder.convert_spectrogram_to_audio(spec=spect)
        samples = np.clip(audio[0].float().cpu().numpy(), -1.0, 1.0)
        samples = apply_emotion(samples.astype(np.float64), self.sample_rate, emotion)
        frames = durations[0].float().cpu().numpy()
        symbols = self._symbols(tokens[0].tolist())
        words, phonemes = self._timings(symbols, frames)
        return SpeechTrack(samples.astype(np.float32), self.sample_rate, phonemes, words)

    def _timings(
        self, symbols: list[str], frames: np.ndarray
    ) -> tuple[tuple[WordTiming, ...], tuple[PhonemeTiming, ...]]:
        """Words from the tokens between spaces; phonemes in IPA: the model's own when its
        tokens are IPA, else espeak-ng's for each word, spread over the word's span."""
        ends = np.cumsum(frames) * self.hop_seconds
        starts = ends - frames * self.hop_seconds
        ipa = "ipa" in type(getattr(self.fastpitch, "vocab", None)).__name__.lower()
        words: list[WordTiming] = []
        phonemes: list[PhonemeTiming] = []
        current: list[int] = []

        def close() -> None:
            if not current:
                return
            text = "".join(symbols[k] for k in current).strip(" ,.!?;:'\"-")
            start, end = float(starts[current[0]]), float(ends[current[-1]])
            if text and end > start:
                words.append(WordTiming(text, start, end))
                if ipa:
                    phonemes.extend(
                        PhonemeTiming(symbols[k], float(starts[k]), float(ends[k]))
                        for k in current
                        if frames[k] > 0
                    )
                else:
                    phonemes.extend(_spread_ipa(text, start, end))
            current.clear()

        for k, symbol in enumerate(symbols):
            if symbol.strip() and symbol not in ",.!?;:":
                current.append(k)
                continue
            close()
            if frames[k] > 0:
                phonemes.append(PhonemeTiming("_", float(starts[k]), float(ends[k])))
        close()
        phonemes.sort(key=lambda p: p.start)
        return tuple(words), tuple(phonemes)


def _spread_ipa(word: str, start: float, end: float) -> list[PhonemeTiming]:
    """espeak-ng's IPA phonemes of a word, their relative lengths fitted into [start, end]."""
    from cameofarm.models.reference.voice import EspeakEngine

    spoken = [p for p in EspeakEngine().speak(word).phonemes if p.symbol != "_"]
    if not spoken:
        return []
    lengths = np.array([p.end - p.start for p in spoken])
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(lengths)]) / lengths.sum()
    return [
        PhonemeTiming(p.symbol, float(a), float(b))
        for p, a, b in zip(spoken, edges[:-1], edges[1:], strict=True)
    ]
