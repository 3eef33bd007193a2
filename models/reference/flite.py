"""Debian's flite as a base voice: far more intelligible than espeak-ng (to a recogniser
too: README), English only. It is a program (`apt-get install flite`; `make setup` installs
it) that reports no timings, so the words and phonemes come from aligning its own audio to
the script with pocketsphinx (US English acoustic model and dictionary, in its wheel).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.models.data import PhonemeTiming, SpeechTrack, WordTiming
from cameofarm.models.reference.voice import SAMPLE_RATE, EspeakEngine, clean_script

FRAME = 0.01  # pocketsphinx's frame: 10 ms
# CMU (ARPAbet) phones to IPA, the farm's phoneme alphabet.
ARPABET_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ",
    "D": "d", "DH": "ð", "EH": "ɛ", "ER": "ɜ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h",
    "IH": "ɪ", "IY": "i", "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ",
    "OW": "oʊ", "OY": "ɔɪ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ",
    "UH": "ʊ", "UW": "u", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ", "SIL": "_",
}  # fmt: skip
_aligner_lock = threading.Lock()
_aligner: list[Any] = []


def available() -> bool:
    return shutil.which("flite") is not None


def _decoder() -> Any:
    with _aligner_lock:
        if not _aligner:
            from pocketsphinx import Decoder

            _aligner.append(Decoder(samprate=16000, loglevel="FATAL"))
        return _aligner[0]


def _words_for_alignment(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z']+", text.lower()) if w.strip("'")]


def align(
    samples: np.ndarray, sample_rate: int, text: str
) -> tuple[tuple[PhonemeTiming, ...], tuple[WordTiming, ...]] | None:
    """Phoneme (IPA) and word timings of `text` in the audio, or None when a word is not in
    the recogniser's dictionary (numbers, names) or the audio does not fit the words."""
    from cameofarm.models.reference.speech import pcm16

    words = _words_for_alignment(text)
    if not words or any(ch.isdigit() for ch in text):  # flite says numbers its own way
        return None
    pcm = pcm16(samples, sample_rate)
    decoder = _decoder()
    with _aligner_lock:
        try:
            decoder.set_align_text(" ".join(words))
        except RuntimeError:  # a word the dictionary lacks
            return None
        try:
            for second_pass in (False, True):  # word alignment, then the phones
                if second_pass:
                    decoder.set_alignment()
                decoder.start_utt()
                decoder.process_raw(pcm, full_utt=True)
                decoder.end_utt()
        except RuntimeError:  # the audio does not fit the words: no alignment
            return None
        alignment = decoder.get_alignment()
        if alignment is None:
            return None
        phones = [
            (p.name, p.start * FRAME, (p.start + p.duration) * FRAME) for p in alignment.phones()
        ]
        spoken = [
            (w.name, w.start * FRAME, (w.start + w.duration) * FRAME)
            for w in alignment.words()
            if not w.name.startswith(("<", "["))
        ]
    phonemes = tuple(PhonemeTiming(ARPABET_IPA.get(n, "_"), a, b) for n, a, b in phones)
    timed = tuple(WordTiming(re.sub(r"\(\d+\)$", "", n), a, b) for n, a, b in spoken)
    return phonemes, timed


PHONES = tuple(ARPABET_IPA)  # the phone set frame labels index
_IPA_PHONE = {ipa: i for i, ipa in enumerate(ARPABET_IPA.values())}


def phone_index(ipa: str) -> int:
    """The phone-set index of an IPA phoneme (stress and length marks ignored), -1 if none."""
    s = ipa.lstrip("ˈˌ'%=").rstrip("ːˑ̩")
    return _IPA_PHONE.get(s, _IPA_PHONE.get(s[:2], _IPA_PHONE.get(s[:1], -1)))


def frame_phones(phonemes: tuple[PhonemeTiming, ...], frames: int, step: float) -> np.ndarray:
    """The phone index at each frame of `step` seconds (-1 where none)."""
    labels = np.full(frames, -1, np.int8)
    for p in phonemes:
        a, b = round(p.start / step), round(p.end / step)
        labels[max(a, 0) : min(b, frames)] = phone_index(p.symbol)
    return labels


def recognise_phones(samples: np.ndarray, sample_rate: int) -> tuple[PhonemeTiming, ...]:
    """Phone timings of untranscribed English speech: recognise the words (pocketsphinx's
    language model), then align them. Empty if nothing is recognised."""
    from cameofarm.models.reference.speech import pcm16

    pcm = pcm16(samples, sample_rate)
    decoder = _decoder()
    with _aligner_lock:
        decoder.activate_search()  # the language model, after any alignment
        try:
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
        except RuntimeError:  # nothing recognisable
            return ()
        hyp = decoder.hyp()
    text = hyp.hypstr if hyp is not None else ""
    timed = align(samples, sample_rate, text) if text else None
    return timed[0] if timed is not None else ()


class FliteEngine:
    """flite speaking a script, with timings from aligning its audio to the script (or, for
    words the aligner's dictionary lacks, espeak-ng's timings stretched to flite's length)."""

    def __init__(self, voice: str = "kal16") -> None:
        binary = shutil.which("flite")
        if binary is None:
            raise RuntimeError("flite is not installed: `apt-get install flite` (make setup does)")
        self.binary, self.voice = binary, voice
        self.sample_rate = SAMPLE_RATE

    @staticmethod
    def available() -> bool:
        return available()

    def speak(
        self, text: str, words_per_minute: int = 165, pitch: int = 50, timed: bool = True
    ) -> SpeechTrack:
        """The text spoken; timed=False skips the alignment (no phonemes or words)."""
        import soundfile
        from scipy.signal import resample_poly

        text = clean_script(text)
        stretch = 165.0 / max(words_per_minute, 60)
        with tempfile.TemporaryDirectory(prefix="cameofarm-flite-") as tmp:
            out = Path(tmp) / "speech.wav"
            command = [self.binary, "-voice", self.voice, "--setf"]
            command += [f"duration_stretch={stretch:.3f}", "-t", text, "-o", str(out)]
            subprocess.run(command, check=True, capture_output=True)
            audio, rate = soundfile.read(out, dtype="float32")
        g = int(np.gcd(rate, SAMPLE_RATE))
        samples = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
        if not timed:
            return SpeechTrack(samples, SAMPLE_RATE, (), ())
        timings = align(samples, SAMPLE_RATE, text)
        if timings is not None:
            return SpeechTrack(samples, SAMPLE_RATE, *timings)
        guide = EspeakEngine().speak(text, words_per_minute, pitch)
        k = (len(samples) / SAMPLE_RATE) / max(guide.duration, 1e-6)
        phonemes = tuple(PhonemeTiming(p.symbol, p.start * k, p.end * k) for p in guide.phonemes)
        words = tuple(WordTiming(w.text, w.start * k, w.end * k) for w in guide.words)
        return SpeechTrack(samples, SAMPLE_RATE, phonemes, words)
