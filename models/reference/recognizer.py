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
        from cameofarm.models.reference.speech import VAD_RATE, _resample

        assert VAD_RATE == RATE
        audio = _resample(samples, sample_rate)
        if audio.size < RATE // 10:  # under 0.1 s: nothing to hear
            return []
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr.split() if hyp is not None and hyp.hypstr else []


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
