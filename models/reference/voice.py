"""Reference voice: espeak-ng speaks the words (with phoneme timings), WORLD moves the result's
pitch and spectral envelope toward the cameo's voice profile."""

from __future__ import annotations

import ctypes
import re
import threading
import unicodedata

import numpy as np
from cameofarm.models.contracts import VoiceProfiler
from cameofarm.models.data import (
    AnyVoiceProfile,
    PhonemeTiming,
    SpeechTrack,
    VoiceProfile,
    WordTiming,
)

SAMPLE_RATE = 22050
FFT_SIZE = 1024
FRAME_PERIOD_MS = 5.0
MAX_SCRIPT_CHARS = 5000

_EV_LIST_TERMINATED, _EV_WORD, _EV_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA, _INIT_DONT_EXIT = 0x0001, 0x0002, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakEngine:
    """The espeak-ng library (shipped by espeakng-loader) driven through its C API."""

    _lock = threading.Lock()  # the library keeps global state: one synthesis at a time
    _lib: ctypes.CDLL | None = None
    _rate = 0

    def __init__(self, voice: str = "en-us") -> None:
        self.voice = voice
        with EspeakEngine._lock:
            if EspeakEngine._lib is None:
                import espeakng_loader

                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                rate = lib.espeak_Initialize(
                    _AUDIO_OUTPUT_SYNCHRONOUS,
                    0,
                    espeakng_loader.get_data_path().encode(),
                    _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT,
                )
                if rate <= 0:
                    raise RuntimeError("espeak-ng failed to initialise; reinstall espeakng-loader")
                EspeakEngine._lib, EspeakEngine._rate = lib, rate

    @property
    def sample_rate(self) -> int:
        return EspeakEngine._rate

    def speak(self, text: str, words_per_minute: int = 165, pitch: int = 50) -> SpeechTrack:
        """Return the text spoken by espeak-ng with per-phoneme start/end times."""
        text = clean_script(text)
        lib = EspeakEngine._lib
        assert lib is not None
        chunks: list[np.ndarray] = []
        events: list[tuple[int, str]] = []
        word_events: list[tuple[int, int, int]] = []  # (ms, first character (1-based), length)

        def on_audio(wav: ctypes._Pointer, count: int, ev: ctypes._Pointer) -> int:
            if count > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            i = 0
            while ev[i].type != _EV_LIST_TERMINATED:
                e = ev[i]
                if e.type == _EV_PHONEME:  # IPA (the engine is initialised for it); "" = pause
                    events.append((e.audio_position, e.id.string.decode(errors="replace") or "_"))
                elif e.type == _EV_WORD:
                    word_events.append((e.audio_position, e.text_position, e.length))
                i += 1
            return 0

        callback = _Callback(on_audio)
        data = text.encode("utf-8")
        with EspeakEngine._lock:
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {self.voice!r}")
            lib.espeak_SetParameter(1, int(words_per_minute), 0)  # espeakRATE
            lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
            status = lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        samples = (
            np.concatenate(chunks).astype(np.float32) / 32768.0
            if chunks
            else np.zeros(0, np.float32)
        )
        duration = len(samples) / self.sample_rate
        phonemes = []
        for k, (ms, symbol) in enumerate(events):
            end_ms = events[k + 1][0] if k + 1 < len(events) else duration * 1000.0
            if end_ms > ms:
                phonemes.append(PhonemeTiming(symbol, ms / 1000.0, end_ms / 1000.0))
        return SpeechTrack(
            samples, self.sample_rate, tuple(phonemes), _word_timings(text, word_events, phonemes)
        )


def _word_timings(
    text: str, events: list[tuple[int, int, int]], phonemes: list[PhonemeTiming]
) -> tuple[WordTiming, ...]:
    """Each word from its start event to the last sounding phoneme before the next word."""
    words = []
    for k, (ms, position, length) in enumerate(events):
        word = text[max(position - 1, 0) : max(position - 1, 0) + max(length, 0)].strip()
        start = ms / 1000.0
        limit = events[k + 1][0] / 1000.0 if k + 1 < len(events) else float("inf")
        ends = [p.end for p in phonemes if p.symbol != "_" and start <= p.start < limit]
        if word and ends:
            words.append(WordTiming(word, start, max(ends)))
    return tuple(words)


def clean_script(text: str) -> str:
    """Return the script with control characters removed; raise if nothing speakable remains."""
    if not isinstance(text, str):
        raise ValueError("script must be text")
    if len(text) > MAX_SCRIPT_CHARS:
        raise ValueError(f"script is {len(text)} characters; the limit is {MAX_SCRIPT_CHARS}")
    cleaned = "".join(" " if unicodedata.category(ch).startswith(("C", "Z")) else ch for ch in text)
    # '<' would let a caller inject SSML-like markup into espeak; speak it as a word instead.
    cleaned = " ".join(cleaned.replace("<", " less than ").replace(">", " greater than ").split())
    if not any(ch.isalnum() for ch in cleaned):
        raise ValueError("script has no speakable words; give at least one word to say")
    return cleaned


# Emotion on prosody: (pitch level change in semitones, factor on the pitch range). Joy speaks
# higher and livelier, sadness lower and flatter. Timing is left alone: the words' and
# phonemes' timings, which lip sync follows, stay as spoken.
EMOTION_PROSODY = {"neutral": (0.0, 1.0), "joy": (2.0, 1.35), "sad": (-1.5, 0.6)}


def prosody(emotion: str) -> tuple[float, float]:
    """(log-F0 shift, range factor) for an emotion, or ValueError naming the known ones."""
    if emotion not in EMOTION_PROSODY:
        raise ValueError(f"emotion must be one of {', '.join(EMOTION_PROSODY)}, got {emotion!r}")
    semitones, spread = EMOTION_PROSODY[emotion]
    return semitones * np.log(2.0) / 12.0, spread


def shape_pitch(
    f0: np.ndarray, log_mean: float, log_std: float, emotion: str = "neutral"
) -> np.ndarray:
    """F0 with its voiced contour moved to a level and range (the cameo's), coloured by the
    emotion; unvoiced frames stay 0."""
    shift, spread = prosody(emotion)
    out = f0.copy()
    voiced = f0 > 0
    if voiced.sum() >= 2:
        log_f0 = np.log(f0[voiced])
        z = (log_f0 - log_f0.mean()) / (log_f0.std() + 1e-6)
        out[voiced] = np.exp(log_mean + shift + z * max(log_std, 0.05) * spread)
    return out


def apply_emotion(samples: np.ndarray, sr: int, emotion: str) -> np.ndarray:
    """Speech re-voiced (WORLD) with the emotion's pitch level and range, same length; for
    voices that do not go through WORLD themselves. Neutral returns the samples unchanged."""
    if prosody(emotion) == (0.0, 1.0):
        return samples
    import pyworld

    f0, sp, ap = world_analyze(samples, sr)
    voiced = f0[f0 > 0]
    if len(voiced) < 2:
        return samples
    log_f0 = np.log(voiced)
    f0 = shape_pitch(f0, float(log_f0.mean()), float(log_f0.std()), emotion)
    y = pyworld.synthesize(f0, sp, ap, sr, frame_period=FRAME_PERIOD_MS)[: len(samples)]
    return np.asarray(y, np.float32)


def world_analyze(samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return WORLD's (f0, spectral envelope, aperiodicity) for mono float samples."""
    import pyworld

    x = samples.astype(np.float64)
    f0, t = pyworld.dio(x, sr, frame_period=FRAME_PERIOD_MS, f0_floor=60.0, f0_ceil=500.0)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr, fft_size=FFT_SIZE)
    ap = pyworld.d4c(x, f0, t, sr, fft_size=FFT_SIZE)
    return f0, sp, ap


def speech_mask(samples: np.ndarray, sr: int, frame_ms: float = 30.0) -> np.ndarray:
    """Return a per-frame boolean voice-activity mask from short-time energy."""
    hop = max(1, int(sr * frame_ms / 1000))
    n = len(samples) // hop
    if n == 0:
        return np.zeros(0, bool)
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor = np.percentile(energy_db, 10)
    peak = np.percentile(energy_db, 95)
    if peak - floor < 12.0:  # no clear speech/pause contrast: all noise or all silence
        return energy_db > max(floor + 6.0, -50.0) if peak > -50 else np.zeros(n, bool)
    return np.asarray(energy_db > floor + 0.35 * (peak - floor), dtype=bool)


class WorldVoiceProfiler:
    """The reference voice profiler: WORLD pitch statistics and spectral envelope, the profile
    WorldVoiceBackend converts espeak-ng's voice towards."""

    name = "world@1"

    def profile(self, samples: np.ndarray, sample_rate: int) -> VoiceProfile:
        return analyze_voice(samples, sample_rate)


def analyze_voice(samples: np.ndarray, sr: int) -> VoiceProfile:
    """Build a voice profile (pitch statistics, mean envelope) from a speech recording."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"analyze_voice expects {SAMPLE_RATE} Hz audio, got {sr}")
    if len(samples) < sr or float(np.max(np.abs(samples), initial=0.0)) < 1e-3:
        raise ValueError("the recording has no audible speech; record at least 30 s of speech")
    mask = speech_mask(samples, sr)
    hop = int(sr * 0.03)
    speech_seconds = float(mask.sum() * hop / sr)
    if speech_seconds < 1.0:
        raise ValueError(f"only {speech_seconds:.1f} s of speech detected; need clear speech")
    f0, sp, _ = world_analyze(samples[: 60 * sr], sr)
    voiced = f0 > 0
    if voiced.sum() < 20:
        raise ValueError("no voiced speech found (pitch track empty); record clear speech")
    log_f0 = np.log(f0[voiced])
    envelope = np.log(sp[voiced] + 1e-12).mean(axis=0)
    return VoiceProfile(
        sample_rate=sr,
        f0_log_mean=float(log_f0.mean()),
        f0_log_std=float(log_f0.std()),
        f0_p5=float(np.exp(np.percentile(log_f0, 5))),
        f0_p95=float(np.exp(np.percentile(log_f0, 95))),
        envelope=envelope.astype(np.float32),
        fft_size=FFT_SIZE,
        speech_seconds=speech_seconds,
        speaker=speaker_embedding(samples[: 60 * sr], sr),
    )


_LANGUAGE_SWITCH = re.compile(r"^\([a-z-]+\)$")


_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ'’.,!?;:-]+")


def spelled_out(track: SpeechTrack) -> list[str]:
    """Words espeak-ng could not read in the voice's language and spelled out character by
    character in another one ("Japanese letter..."): it marks each switch as "(en)"."""
    marks = [p.start for p in track.phonemes if _LANGUAGE_SWITCH.match(p.symbol)]
    hit = [w.text for w in track.words if any(w.start - 1e-3 <= t <= w.end + 1e-3 for t in marks)]
    if not hit:
        return ["(the script)"] if marks else []
    # A word of Latin letters read in another language is a loanword ("Team" in German is
    # read as English), not spelled out: only other scripts are named letter by letter.
    return list(dict.fromkeys(w for w in hit if not _LATIN_WORD.fullmatch(w)))


def plain_speech(script: str, language: str) -> SpeechTrack:
    """The script as espeak-ng speaks it in the language, before any voice conversion: what
    the reference voice converts (same words, same timing), so its length is the render's."""
    from cameofarm.models.reference.languages import espeak_voice

    return EspeakEngine(espeak_voice(language)).speak(script)


class WorldVoiceBackend:
    """espeak-ng + WORLD voice conversion toward a cameo's voice profile."""

    def __init__(self, envelope_limit_db: float = 12.0) -> None:
        self.profiler: VoiceProfiler = WorldVoiceProfiler()
        self.envelope_limit = envelope_limit_db / 10.0 * np.log(10.0)  # dB → natural log power

    def languages(self) -> tuple[str, ...]:
        from cameofarm.models.reference.languages import espeak_languages

        return espeak_languages()

    def synthesize(
        self, script: str, profile: AnyVoiceProfile, language: str = "en", emotion: str = "neutral"
    ) -> SpeechTrack:
        """Speak script in the language, then convert pitch and envelope toward the profile
        (the pitch coloured by the emotion)."""
        if not isinstance(profile, VoiceProfile):
            raise ValueError(
                f"the WORLD voice needs a {self.profiler.name} profile, not {profile.profiler}"
            )
        import pyworld
        from scipy.ndimage import uniform_filter1d

        if language not in self.languages():
            raise ValueError(f"the reference voice does not speak {language!r}")
        raw = plain_speech(script, language)
        unreadable = spelled_out(raw)
        if unreadable:
            raise ValueError(
                f"the reference voice cannot read {', '.join(unreadable)[:80]} in {language!r}"
            )
        sr = raw.sample_rate
        if profile.sample_rate != sr or profile.fft_size != FFT_SIZE:
            raise ValueError("voice profile was made for another sample rate / FFT size")
        f0, sp, ap = world_analyze(raw.samples, sr)
        voiced = f0 > 0
        if voiced.any():
            f0 = shape_pitch(f0, profile.f0_log_mean, profile.f0_log_std, emotion)
            src_env = np.log(sp[voiced] + 1e-12).mean(axis=0)
            delta = uniform_filter1d(profile.envelope.astype(np.float64) - src_env, 9)
            delta = np.clip(delta, -self.envelope_limit, self.envelope_limit)
            sp = sp * np.exp(delta)[None, :]
        y = pyworld.synthesize(f0, sp, ap, sr, frame_period=FRAME_PERIOD_MS)
        y = y[: len(raw.samples)].astype(np.float32)
        return SpeechTrack(normalise_loudness(y), sr, raw.phonemes, raw.words)


def normalise_loudness(y: np.ndarray) -> np.ndarray:
    """Synthesised speech at about -20 dBFS, never clipping."""
    rms = float(np.sqrt(np.mean(y**2))) if len(y) else 0.0
    if rms > 0:
        y = y * (0.1 / rms)
    peak = float(np.max(np.abs(y), initial=0.0))
    if peak > 0.98:
        y = y * (0.98 / peak)
    return y.astype(np.float32)


def _mel_filterbank(sr: int, n_fft: int, bands: int, fmin: float, fmax: float) -> np.ndarray:
    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    edges = 700.0 * (
        10 ** (np.linspace(mel(np.array(fmin)), mel(np.array(fmax)), bands + 2) / 2595.0) - 1.0
    )
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    bank = np.zeros((bands, len(bins)))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        bank[b] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return bank


def mfcc(samples: np.ndarray, sr: int, n_coeffs: int = 20) -> np.ndarray:
    """Return (frames, n_coeffs) MFCCs (25 ms windows, 10 ms hop) of mono float samples."""
    from scipy.fft import dct

    hop, win, n_fft = int(sr * 0.01), int(sr * 0.025), 512 if sr <= 16000 else 1024
    if len(samples) < win:
        return np.zeros((0, n_coeffs))
    x = np.append(samples[0], samples[1:] - 0.97 * samples[:-1]).astype(np.float64)
    count = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hamming(win), n_fft)) ** 2
    bank = _mel_filterbank(sr, n_fft, 40, 80.0, min(7600.0, sr / 2 - 100))
    return np.asarray(
        dct(np.log(power @ bank.T + 1e-10), type=2, norm="ortho", axis=1)[:, :n_coeffs]
    )


class MfccSpeakerEncoder:
    """The reference speaker encoder: mean and spread of MFCC 1-19 over speech frames. It
    tells a clearly different voice, not a similar one (README: measured overlap)."""

    name = "mfcc-stats@1"

    def __init__(self, same_speaker: float = 0.3) -> None:
        self.same_speaker = same_speaker

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return speaker_embedding(samples, sample_rate)


def speaker_embedding(samples: np.ndarray, sr: int) -> np.ndarray:
    """A classical speaker embedding: mean and spread of MFCC 1-19 over speech frames.

    Limits: it captures timbre and channel (microphone, room) together, so the same person on
    two very different microphones can look like two speakers, and similar voices can look
    alike. It is a consistency check within one recording, not speaker identification.
    """
    coeffs = mfcc(samples, sr)
    if len(coeffs) == 0:
        return np.zeros(38, np.float32)
    active = speech_mask(samples, sr, 10.0)[: len(coeffs)]
    coeffs = coeffs[: len(active)][active] if active.any() else coeffs
    return np.concatenate([coeffs[:, 1:20].mean(0), coeffs[:, 1:20].std(0)]).astype(np.float32)


def speaker_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between two speaker embeddings (0 = same direction)."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
    return 1.0 - float(np.dot(a, b)) / denom
