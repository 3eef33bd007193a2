"""How well the offline recogniser hears real people (`cameofarm bench recognizer`).

Reads transcribed recordings — a Sphinx `transcription` file (`<s> words </s> (fileid)` per
line, `fileid.wav` beside it) or `NAME.txt` beside each `NAME.wav` — and measures, per
recording, the two ways the farm uses pocketsphinx:

- **phrase**: the liveness check's recogniser (a grammar of the phrase vocabulary, any words
  in any order), here given the recording's own words too, so a sentence can be heard; word
  errors counted as liveness counts them (words heard before or after are free);
- **transcript**: the general English model the voice report's "words recovered" uses.

Real transcribed speech that installs from the package index: pocketsphinx's source
distribution holds LibriVox and spoken-card recordings with their transcripts (README).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_SPHINX_LINE = re.compile(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()\s]+)\)\s*$")


@dataclass(frozen=True)
class Heard:
    """One recording, what it says and what each recogniser heard."""

    name: str
    seconds: float
    words: tuple[str, ...]
    phrase_heard: tuple[str, ...]
    phrase_errors: int
    transcript: tuple[str, ...]
    transcript_errors: int


def transcribed_recordings(folder: Path) -> list[tuple[Path, str]]:
    """(recording, its words) for every transcribed recording in `folder` (see the module)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    found: list[tuple[Path, str]] = []
    for listing in sorted(folder.glob("*transcription*")):
        for n, line in enumerate(listing.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            m = _SPHINX_LINE.match(line)
            if m is None:
                raise ValueError(f"{listing}:{n}: not '<s> words </s> (fileid)': {line[:80]!r}")
            audio = folder / f"{m.group(2)}.wav"
            if not audio.is_file():
                raise ValueError(f"{listing}:{n}: no recording {audio.name} beside it")
            found.append((audio, m.group(1)))
    if not found:
        for text in sorted(folder.glob("*.txt")):
            audio = text.with_suffix(".wav")
            if audio.is_file():
                found.append((audio, text.read_text(errors="replace")))
    if not found:
        raise ValueError(
            f"{folder} holds no transcribed recordings: a Sphinx `transcription` file with "
            "its .wav files, or NAME.txt beside each NAME.wav"
        )
    return found


def hear_recording(audio: Path, text: str) -> Heard:
    from cameofarm.models.media import read_audio
    from cameofarm.models.reference.recognizer import (
        RATE,
        PhraseRecognizer,
        edit_distance,
        script_words,
        transcribe,
        word_errors,
    )
    from cameofarm.pipelines.liveness import phrase_vocabulary

    words = tuple(script_words(text))
    if not words:
        raise ValueError(f"{audio.name}: its transcript has no words")
    samples = read_audio(audio, RATE)
    if len(samples) == 0:
        raise ValueError(f"{audio.name}: no audio could be read from it")
    plain = [w for w in words if w.isalpha()]
    phrase = PhraseRecognizer([*phrase_vocabulary(), *plain]).hear(samples, RATE)
    transcript = transcribe(samples, RATE)
    return Heard(
        audio.name,
        len(samples) / RATE,
        words,
        tuple(phrase),
        word_errors(list(words), phrase),
        tuple(transcript),
        edit_distance(words, transcript),
    )


def measure_recognizer(
    folders: list[Path], echo: Callable[[str], None] = print
) -> tuple[float, float, int]:
    """Hear every transcribed recording in the folders; print each and the totals. Returns
    (phrase word error rate, transcript word error rate, words)."""
    items = [item for folder in folders for item in transcribed_recordings(folder)]
    echo(f"{len(items)} transcribed recordings")
    words = phrase_errors = transcript_errors = 0
    for audio, text in items:
        h = hear_recording(audio, text)
        words += len(h.words)
        phrase_errors += h.phrase_errors
        transcript_errors += h.transcript_errors
        echo(
            f"  {h.name}: {h.seconds:.1f} s, {len(h.words)} words; phrase {h.phrase_errors} "
            f"errors ({' '.join(h.phrase_heard) or '-'}); transcript {h.transcript_errors} "
            f"errors ({' '.join(h.transcript) or '-'})"
        )
    phrase_wer, transcript_wer = phrase_errors / words, transcript_errors / words
    echo(
        f"word error rate over {words} words: phrase recogniser {phrase_wer:.1%}, general "
        f"transcript {transcript_wer:.1%}"
    )
    return phrase_wer, transcript_wer, words
