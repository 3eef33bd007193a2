"""An offline speech recogniser for the liveness phrase: pocketsphinx and the US English
acoustic model that ships in its wheel, listening for the phrase vocabulary only.

Restricting what it may hear to the few dozen words phrases are made of (any number, in any
order) makes it accurate on clear speech (README: measured accuracy) and means what it
reports is always words of that vocabulary: a wrong phrase is heard as other words of it,
or as nothing. It recognises English only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

RATE = 16000


class PhraseRecognizer:
    """Hears which of `vocabulary`'s words are spoken, in order."""

    name = "pocketsphinx:en-us@5"

    def __init__(self, vocabulary: Sequence[str]) -> None:
        from pocketsphinx import Decoder

        words = sorted({w.lower() for w in vocabulary})
        if not words or not all(w.isalpha() for w in words):
            raise ValueError("the vocabulary must be plain words")
        grammar = (
            "#JSGF V1.0;\ngrammar phrase;\npublic <phrase> = ( " + " | ".join(words) + " )* ;\n"
        )
        self._decoder = Decoder(samprate=RATE, lm=None, loglevel="FATAL")
        self._decoder.add_jsgf_string("phrase", grammar)
        self._decoder.activate_search("phrase")
        self._lock = threading.Lock()
        self.vocabulary = tuple(words)

    def hear(self, samples: np.ndarray, sample_rate: int) -> list[str]:
        """The vocabulary words heard in the audio, in order (empty if none)."""
        from cameofarm.models.reference.speech import pcm16

        pcm = pcm16(samples, sample_rate)
        if len(pcm) < 2 * RATE // 10:  # under 0.1 s: nothing to hear
            return []
        with self._lock:
            try:
                self._decoder.start_utt()
                self._decoder.process_raw(pcm, full_utt=True)
                self._decoder.end_utt()
            except RuntimeError:  # nothing in the grammar fits the audio
                return []
            hyp = self._decoder.hyp()
        return hyp.hypstr.split() if hyp is not None and hyp.hypstr else []


_transcriber_lock = threading.Lock()
_transcriber: list[object] = []


def transcribe(samples: np.ndarray, sample_rate: int) -> list[str]:
    """The English words pocketsphinx's general language model hears (for intelligibility
    figures: how much of a script a recogniser recovers)."""
    from cameofarm.models.reference.speech import pcm16
    from pocketsphinx import Decoder

    peak = float(np.max(np.abs(samples), initial=0.0))
    pcm = pcm16(samples * (0.7 / (peak + 1e-9)), sample_rate)
    if len(pcm) < 2 * RATE // 10:
        return []
    with _transcriber_lock:
        if not _transcriber:
            _transcriber.append(Decoder(samprate=RATE, loglevel="FATAL"))
        decoder = _transcriber[0]
        try:
            decoder.start_utt()  # type: ignore[attr-defined]
            decoder.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
            decoder.end_utt()  # type: ignore[attr-defined]
        except RuntimeError:  # nothing recognisable
            return []
        hyp = decoder.hyp()  # type: ignore[attr-defined]
    return hyp.hypstr.split() if hyp is not None and hyp.hypstr else []


def script_words(script: str) -> list[str]:
    """A script's words as the recogniser spells them (lower case, apostrophes kept)."""
    import re

    return re.findall(r"[a-z']+", script.lower())


def edit_distance(expected: Sequence[str], heard: Sequence[str]) -> int:
    """Word substitutions, insertions and deletions turning `expected` into `heard`."""
    n, m = len(expected), len(heard)
    table = np.zeros((n + 1, m + 1), int)
    table[:, 0], table[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i, j] = min(
                table[i - 1, j - 1] + (expected[i - 1] != heard[j - 1]),
                table[i - 1, j] + 1,
                table[i, j - 1] + 1,
            )
    return int(table[n, m])


def recovered(script: str, heard: Sequence[str]) -> float:
    """Share of the script's words a transcript recovers, in order (1 - word error rate,
    at least 0)."""
    expected = script_words(script)
    if not expected:
        return 1.0
    return max(0.0, 1.0 - edit_distance(expected, heard) / len(expected))


def word_errors(expected: Sequence[str], heard: Sequence[str]) -> int:
    """Fewest word substitutions, insertions and deletions turning `expected` into a
    stretch of `heard` (words heard before or after the phrase are free)."""
    n = len(expected)
    previous = list(range(n + 1))  # heard[:0] against expected[:i]
    best = previous[n]
    for word in heard:
        current = [0] * (n + 1)  # the phrase may start at any heard word
        for i in range(1, n + 1):
            current[i] = min(
                previous[i - 1] + (expected[i - 1] != word),
                previous[i] + 1,
                current[i - 1] + 1,
            )
        best = min(best, current[n])
        previous = current
    return best
