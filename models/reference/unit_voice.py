"""The reference voice: a stock voice speaks the script, then its timbre is rebuilt from the
cameo's own enrolled speech.

The stock (base) voice is flite for English when it is installed (far more intelligible)
and espeak-ng otherwise and for every other language. WORLD splits the base speech into
pitch, spectral envelope and aperiodicity. Each 50 ms stretch of the envelope is matched
(mel-cepstra, each speaker's own mean and spread taken out, plus voicing) to the closest
50 ms stretch of the cameo's enrolled speech, and the cameo's stretches, overlapped and
blended, replace most of the base envelope; the pitch contour keeps the base's shape at the
cameo's pitch level and range. Words and timings stay the base voice's, so lip sync and
length are unchanged.

How much of the envelope is the cameo's is set per cameo at enrollment (`calibrate`): the
more of it, the more the speech sounds like them and the fewer words survive, so each cameo
gets the lowest share (from 0.4 up to TIMBRE) whose renders of two calibration scripts
already clear the farm's likeness targets; TIMBRE when none does.

Measured (README, "Voice"): on the fixtures' real speech, GE2E similarity to the speaker
rises from the base voice's ~0.69 to ~0.82 while a recogniser still recovers most words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
from cameofarm.models.contracts import VoiceProfiler
from cameofarm.models.data import AnyVoiceProfile, PhonemeTiming, SpeechTrack, VoiceFrames
from cameofarm.models.reference.voice import (
    FFT_SIZE,
    FRAME_PERIOD_MS,
    SAMPLE_RATE,
    normalise_loudness,
    plain_speech,
    shape_pitch,
    spelled_out,
    world_analyze,
)

MCEP_DIM = 40
MAX_SECONDS = 45.0  # of enrolled speech kept: ~1.4 MB of frames
BLOCK = 10  # frames matched together (50 ms): the cameo's timbre moves naturally within one
VOICED_WEIGHT = 3.0  # a voiced stretch matches a voiced one
PHONE_WEIGHT = 3.0  # and a stretch of the same phones (as the recogniser labelled them)

TO_CAMEO, GAIN = 0.75, 0.1  # the farm's targets: GE2E to the cameo, and over the stock voice
# The most of the cameo's envelope a render takes (past it, words are lost); uncalibrated
# profiles take it too.
TIMBRE = VoiceFrames.timbre
CALIBRATION_SHARES = (0.4, 0.5, 0.6)  # the clearer shares enrollment tries below TIMBRE
CLEAR_WORDS = 0.5  # a render a recogniser recovers fewer of the words from is hard to follow
CALIBRATION_MARGIN = 0.02  # other scripts score a little either side of the calibration's
CALIBRATION_SCRIPTS = (
    "Please read the safety notes before you start, and ask your manager if anything is unclear.",
    "The new office opens on Monday, with free coffee and quiet rooms on every floor.",
)


def _features(
    mcep: np.ndarray, voiced: np.ndarray, loud: np.ndarray, phones: np.ndarray
) -> np.ndarray:
    """Per-speaker normalised mel-cepstra (energy left out), voicing and phone, per frame."""
    from cameofarm.models.reference.flite import PHONES

    body = mcep[:, 1:]
    ref = body[loud] if loud.sum() >= 10 else body
    z = (body - ref.mean(axis=0)) / (ref.std(axis=0) + 1e-6)
    onehot = np.zeros((len(mcep), len(PHONES)), np.float32)
    labelled = phones >= 0
    onehot[np.flatnonzero(labelled), phones[labelled]] = PHONE_WEIGHT
    return np.hstack([z, VOICED_WEIGHT * voiced[:, None], onehot]).astype(np.float32)


class WorldFramesProfiler:
    """Profiles a cameo's enrolled speech as the frames the reference voice draws from, and
    (`calibrated`) the share of them its renders take (see the module)."""

    name = "world-frames@1"

    def __init__(self, calibrated: bool = True) -> None:
        self.calibrated = calibrated

    def profile(self, samples: np.ndarray, sample_rate: int) -> VoiceFrames:
        import pyworld
        from cameofarm.models.reference.flite import frame_phones, recognise_phones
        from cameofarm.models.reference.speech import speech_frames

        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"profile speech at {SAMPLE_RATE} Hz, not {sample_rate}")
        f0, sp, ap = world_analyze(samples, sample_rate)
        step = FRAME_PERIOD_MS / 1000.0
        speech = speech_frames(samples, sample_rate, step)
        n = min(len(f0), len(speech))
        keep = np.flatnonzero(speech[:n])[: int(MAX_SECONDS / step)]
        if len(keep) < 4 * BLOCK:
            raise ValueError("too little speech to build a voice from; record more speech")
        voiced = f0 > 0
        log_f0 = np.log(f0[:n][speech[:n] & voiced[:n]])
        if len(log_f0) < 20:
            raise ValueError("no voiced speech found to take the pitch from")
        mcep = pyworld.code_spectral_envelope(sp[keep], sample_rate, MCEP_DIM)
        coded = pyworld.code_aperiodicity(ap[keep], sample_rate)
        # Which phone each frame is: recognise the (English) speech, then align its words.
        heard = samples[: int((keep[-1] + 1) * step * sample_rate)]
        phones = frame_phones(recognise_phones(heard, sample_rate), n, step)[keep]
        profile = VoiceFrames(
            self.name,
            sample_rate,
            FFT_SIZE,
            mcep.astype(np.float32),
            coded.astype(np.float32),
            voiced[keep],
            float(log_f0.mean()),
            float(log_f0.std()),
            float(speech[:n].sum() * step),
            phones,
        )
        if not self.calibrated:
            return profile
        try:
            tried = calibrate(profile, samples)
        except ValueError:  # too little speech to tell who speaks: the farm's share
            return profile
        share = pick_timbre(tried)
        at = next((c for c in tried if c.share == share), None)
        return replace(profile, timbre=share, calibrated=None if at is None else at.figures())


def base_speech(script: str, language: str, timed: bool = True) -> SpeechTrack:
    """The stock voice the reference voice converts: flite for English where installed, else
    espeak-ng in the language. Submit measures the length with this same function; callers
    that need only the audio pass timed=False (flite's timings cost an alignment)."""
    from cameofarm.models.reference import flite

    if language == "en" and flite.available():
        return flite.FliteEngine().speak(script, timed=timed)
    return plain_speech(script, language)


class UnitVoiceBackend:
    """The reference voice backend (see the module's description)."""

    def __init__(self, timbre: float | None = None) -> None:
        if timbre is not None and not 0.0 <= timbre <= 1.0:
            raise ValueError("timbre is a share from 0 to 1")
        self.profiler: VoiceProfiler = WorldFramesProfiler()
        # Share of the envelope taken from the cameo's own frames; None: each profile's own.
        self.timbre = timbre

    def languages(self) -> tuple[str, ...]:
        from cameofarm.models.reference.languages import espeak_languages

        return espeak_languages()

    def synthesize(
        self, script: str, profile: AnyVoiceProfile, language: str = "en", emotion: str = "neutral"
    ) -> SpeechTrack:
        if not isinstance(profile, VoiceFrames) or profile.profiler != self.profiler.name:
            raise ValueError(f"the reference voice needs a {self.profiler.name} profile")
        if profile.sample_rate != SAMPLE_RATE or profile.fft_size != FFT_SIZE:
            raise ValueError("voice profile was made for another sample rate / FFT size")
        if language not in self.languages():
            raise ValueError(f"the reference voice does not speak {language!r}")
        base = base_speech(script, language)
        unreadable = spelled_out(base)
        if unreadable:
            raise ValueError(f"the reference voice cannot read {', '.join(unreadable)[:80]}")
        samples = self.convert(base.samples, profile, base.phonemes, emotion)
        return SpeechTrack(samples, base.sample_rate, base.phonemes, base.words)

    def convert(
        self,
        samples: np.ndarray,
        profile: VoiceFrames,
        phonemes: tuple[PhonemeTiming, ...],
        emotion: str = "neutral",
    ) -> np.ndarray:
        """The base speech with the cameo's timbre and pitch level (coloured by the emotion);
        same length."""
        share = profile.timbre if self.timbre is None else self.timbre
        blend = choose_units(samples, profile, phonemes)
        return samples.astype(np.float32) if blend is None else blend.mix(share, emotion)


@dataclass(frozen=True)
class Blend:
    """Base speech analysed, with the cameo's stretches chosen for it (log envelope and
    aperiodicity, overlap-added): mixing them in at any share is cheap."""

    length: int  # samples of the base speech
    f0: np.ndarray
    base_envelope: np.ndarray  # log; the base's own, moved to the cameo's average colour
    base_ap: np.ndarray
    cameo_envelope: np.ndarray  # log
    cameo_ap: np.ndarray
    f0_log_mean: float
    f0_log_std: float

    def mix(self, share: float, emotion: str = "neutral") -> np.ndarray:
        """Speech with `share` of the envelope (and aperiodicity) the cameo's, at the cameo's
        pitch level and range coloured by the emotion."""
        import pyworld

        envelope = np.exp(share * self.cameo_envelope + (1 - share) * self.base_envelope)
        aperiodic = np.clip(share * self.cameo_ap + (1 - share) * self.base_ap, 0.0, 1.0)
        f0 = shape_pitch(self.f0, self.f0_log_mean, self.f0_log_std, emotion)
        y = pyworld.synthesize(
            f0,
            np.ascontiguousarray(envelope),
            np.ascontiguousarray(aperiodic),
            SAMPLE_RATE,
            FRAME_PERIOD_MS,
        )[: self.length].astype(np.float32)
        return normalise_loudness(y)


def choose_units(
    samples: np.ndarray, profile: VoiceFrames, phonemes: tuple[PhonemeTiming, ...]
) -> Blend | None:
    """Match each 50 ms stretch of the base speech to the cameo's closest (see the module);
    None when the speech is too short to match."""
    import pyworld
    from cameofarm.models.reference.flite import frame_phones
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.ndimage import uniform_filter1d

    sr = SAMPLE_RATE
    f0, sp, ap = world_analyze(samples, sr)
    if len(f0) < 2 * BLOCK:
        return None
    mcep = pyworld.code_spectral_envelope(sp, sr, MCEP_DIM)
    loud_src = mcep[:, 0] > np.percentile(mcep[:, 0], 25)
    loud_tgt = profile.mcep[:, 0] > np.percentile(profile.mcep[:, 0], 25)
    labels = frame_phones(phonemes, len(f0), FRAME_PERIOD_MS / 1000.0)
    source = _features(mcep, f0 > 0, loud_src, labels)
    target = _features(profile.mcep, profile.voiced, loud_tgt, profile.phones)
    # Every BLOCK-frame stretch of the cameo, flattened, and whether it is mostly loud.
    windows = sliding_window_view(target, (BLOCK, target.shape[1]))[:, 0]
    windows = windows.reshape(len(windows), -1)
    usable = np.convolve(loud_tgt.astype(float), np.ones(BLOCK), "valid") >= BLOCK / 2
    norms = (windows**2).sum(axis=1)
    hop = BLOCK // 2
    starts = list(range(0, len(source) - BLOCK + 1, hop))
    if starts[-1] != len(source) - BLOCK:
        starts.append(len(source) - BLOCK)
    queries = np.stack([source[s : s + BLOCK].reshape(-1) for s in starts])
    distance = norms[None, :] - 2.0 * queries @ windows.T
    distance[:, ~usable] = np.inf
    best = np.argmin(distance, axis=1)
    # Overlap-add the chosen stretches (log envelope, aperiodicity) with a Hann window.
    taper = np.hanning(BLOCK + 2)[1:-1]
    target_sp = np.log(
        pyworld.decode_spectral_envelope(
            np.ascontiguousarray(profile.mcep, np.float64), sr, FFT_SIZE
        )
        + 1e-12
    )
    target_ap = pyworld.decode_aperiodicity(
        np.ascontiguousarray(profile.coded_ap, np.float64), sr, FFT_SIZE
    )
    log_sp = np.zeros_like(sp)
    new_ap = np.zeros_like(ap)
    weight = np.zeros(len(sp))
    for s, t in zip(starts, best, strict=True):
        log_sp[s : s + BLOCK] += target_sp[t : t + BLOCK] * taper[:, None]
        new_ap[s : s + BLOCK] += target_ap[t : t + BLOCK] * taper[:, None]
        weight[s : s + BLOCK] += taper
    weight = np.maximum(weight, 1e-6)[:, None]
    # The rest of the envelope stays the base's, moved to the cameo's average colour.
    source_sp = np.log(sp + 1e-12)
    shift = uniform_filter1d(target_sp[loud_tgt].mean(0) - source_sp[loud_src].mean(0), 9)
    return Blend(
        len(samples),
        f0,
        source_sp + shift,
        ap,
        log_sp / weight,
        new_ap / weight,
        profile.f0_log_mean,
        profile.f0_log_std,
    )


@dataclass(frozen=True)
class Calibration:
    """How a cameo's renders score at each share tried: the worst calibration script's
    similarity to the cameo and its gain over the stock voice (what the share is chosen by),
    and per script (similarity, gain) with the rendered speech (what the owner is told)."""

    share: float
    to_cameo: float
    gain: float
    scripts: tuple[tuple[float, float], ...] = ()
    outputs: tuple[tuple[str, np.ndarray], ...] = field(default=(), repr=False, compare=False)

    @property
    def clears(self) -> bool:
        return meets(self.to_cameo, self.gain, margin=CALIBRATION_MARGIN)

    def figures(self) -> tuple[float, float, float]:
        """(similarity, gain) averaged over the calibration scripts, and the share of their
        words a recogniser recovers from the renders (English: the scripts are)."""
        from cameofarm.models.reference.recognizer import recovered, transcribe

        scored = self.scripts or ((self.to_cameo, self.gain),)
        heard = [
            recovered(script, transcribe(output, SAMPLE_RATE)) for script, output in self.outputs
        ]
        return (
            float(np.mean([t for t, _ in scored])),
            float(np.mean([g for _, g in scored])),
            float(np.mean(heard)) if heard else float("nan"),
        )


def meets(
    to_cameo: float, gain: float, bar: tuple[float, float] = (TO_CAMEO, GAIN), margin: float = 0.0
) -> bool:
    """Whether a voice's similarity to the cameo and gain over the stock voice clear `bar`
    (the farm's targets unless given) by `margin`: the one rule every verdict uses."""
    return to_cameo >= bar[0] + margin and gain >= bar[1] + margin


def clear(words: float, stock_words: float | None = None) -> bool:
    """Whether a recogniser follows a render: it recovers at least CLEAR_WORDS of the script's
    words, or (when measured) no fewer than from the stock voice saying the same script, for
    a script the recogniser itself struggles with."""
    return words >= CLEAR_WORDS or (stock_words is not None and words >= stock_words)


def calibration_report(profile: VoiceFrames) -> dict[str, Any] | None:
    """The calibration at the profile's share, as stored with the cameo for its owner: the
    figures over the calibration scripts, whether they meet the farm's voice targets and
    whether a recogniser follows the words, and those bars. None: none was measured (too
    little speech, or a profile from before calibration)."""
    if profile.calibrated is None:
        return None
    to_cameo, gain, words = profile.calibrated
    heard = None if np.isnan(words) else round(words, 3)
    return {
        "timbre": profile.timbre,
        "to_cameo": round(to_cameo, 4),
        "gain": round(gain, 4),
        "words_recovered": heard,
        "meets_targets": meets(to_cameo, gain),
        "clear": None if heard is None else clear(heard),
        "targets": {"to_cameo": TO_CAMEO, "gain": GAIN, "words_recovered": CLEAR_WORDS},
    }


def describe_voice(profile: VoiceFrames) -> str:
    """What enrollment tells the owner about a profile's renders (`describe_calibration`),
    or only the share they take where calibration measured nothing."""
    report = calibration_report(profile)
    if report is None:
        return f"renders take {profile.timbre:.0%} of its timbre (not calibrated)"
    return describe_calibration(report)


def describe_calibration(report: dict[str, Any]) -> str:
    """One line for the owner from a `calibration_report`: the share renders take, whether
    they sound like them and can be followed, and what helps when not."""
    share = f"renders take {report['timbre']:.0%} of its timbre"
    bar = report["targets"]
    figures = f"{report['to_cameo']:.2f} to the enrolled speech, {report['gain']:+.2f} over stock"
    if report["words_recovered"] is not None:
        figures += f", {report['words_recovered']:.0%} of the words recovered"
    short = []
    if not report["meets_targets"]:
        short.append(
            f"BELOW the farm's voice targets (>= {bar['to_cameo']} to the enrolled speech, "
            f">= stock + {bar['gain']}): renders may not sound like them"
        )
    if report["clear"] is False:
        short.append(
            f"HARD TO FOLLOW (a recogniser recovers under {bar['words_recovered']:.0%} of the "
            "words): renders lose words"
        )
    verdict = (
        "; ".join(short) + "; re-enrolling with more clear speech helps"
        if short
        else "meets the farm's voice targets, and the words are clear"
    )
    return f"{share} (calibrated: {figures}; {verdict})"


def pick_timbre(tried: list[Calibration]) -> float:
    """The clearest (lowest) share whose renders clear the targets, else the farm's TIMBRE:
    a cameo whose likeness is there at less of their envelope keeps more of the words."""
    clearing = [c.share for c in tried if c.clears]
    return min(clearing) if clearing else TIMBRE


@lru_cache(maxsize=1)
def _calibration_material() -> tuple[tuple[str, SpeechTrack, np.ndarray], ...]:
    """Each calibration script, in the stock voice, and that voice's GE2E embedding."""
    from cameofarm.models.reference.speech import Ge2eSpeakerEncoder

    encoder = Ge2eSpeakerEncoder()
    material = []
    for script in CALIBRATION_SCRIPTS:
        track = base_speech(script, "en")
        material.append((script, track, encoder.embed(track.samples, track.sample_rate)))
    return tuple(material)


def calibrate(profile: VoiceFrames, samples: np.ndarray) -> list[Calibration]:
    """Render the calibration scripts from the cameo's profile at each share up to TIMBRE and
    score them against the cameo's enrolled speech (GE2E, as each job's voice report does).
    Raises ValueError when the speech is too short to tell who speaks."""
    from cameofarm.models.reference.speech import Ge2eSpeakerEncoder, similarity

    encoder = Ge2eSpeakerEncoder()
    enrolled = encoder.embed(samples, profile.sample_rate)
    scores: dict[float, list[tuple[float, float]]] = {}
    outputs: dict[float, list[tuple[str, np.ndarray]]] = {}
    for script, track, stock in _calibration_material():
        blend = choose_units(track.samples, profile, track.phonemes)
        if blend is None:
            continue
        base = similarity(stock, enrolled)
        for share in (*CALIBRATION_SHARES, TIMBRE):
            speech = blend.mix(share)
            to_cameo = similarity(encoder.embed(speech, SAMPLE_RATE), enrolled)
            scores.setdefault(share, []).append((to_cameo, to_cameo - base))
            outputs.setdefault(share, []).append((script, speech))
    return [
        Calibration(
            share,
            min(t for t, _ in got),
            min(g for _, g in got),
            tuple(got),
            tuple(outputs[share]),
        )
        for share, got in scores.items()
    ]
