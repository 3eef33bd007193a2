"""Captions from the speech's word timings: WebVTT and SRT sidecars of every published video.

Cues follow the words as the farm's voice spoke them: a cue ends at a sentence's end, or
before it would pass `max_chars` characters or `max_seconds` seconds, and shows until its
last word ends. Scripts written without spaces (Japanese, Chinese, Thai) are joined without.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cameofarm.models.data import Cue, WordTiming

CAPTION_TYPES = {"vtt": "text/vtt", "srt": "application/x-subrip"}
# Every video gets sidecars; "burned" draws the same cues into its frames as well.
CAPTION_MODES = ("sidecar", "burned")
LINE_CHARS = 42  # one comfortable caption line; a cue has at most two
MAX_CHARS = 2 * LINE_CHARS
MAX_SECONDS = 6.0
_UNSPACED = {"ja", "cmn", "zh", "yue", "th", "hak", "my", "shn"}
_SENTENCE_END = (".", "!", "?", "。", "！", "？", "…")


@dataclass(frozen=True)
class Captions:
    """A video's captions in both formats, and their digests (for its C2PA manifest); `cues`
    as a player shows them (on one or two lines), for burning into the frames."""

    vtt: str
    srt: str
    cues: tuple[Cue, ...] = ()

    def digests(self) -> dict[str, str]:
        return {
            "vtt_sha256": hashlib.sha256(self.vtt.encode()).hexdigest(),
            "srt_sha256": hashlib.sha256(self.srt.encode()).hexdigest(),
        }


def display_words(script: str, words: Sequence[WordTiming]) -> list[WordTiming]:
    """The spoken words with the script's own spelling and punctuation ("Ada!" where the
    voice reports "Ada"), found in order in the script. Text the voice said differently (a
    number read out) is shown with the next word found; a word not found keeps its timing
    with no text of its own."""
    lowered = script.lower()
    at, shown = 0, []
    for word in words:
        found = lowered.find(word.text.lower(), at) if word.text else -1
        if found < 0:
            shown.append(WordTiming("", word.start, word.end))
            continue
        end = found + len(word.text)
        while end < len(script) and not script[end].isspace() and not script[end].isalnum():
            end += 1  # the punctuation that follows the word belongs to it
        shown.append(WordTiming(script[at:end].strip(), word.start, word.end))
        at = end
    rest = script[at:].strip()
    if rest and shown:  # what follows the last word found is shown with it
        last = shown[-1]
        shown[-1] = WordTiming(f"{last.text} {rest}".strip(), last.start, last.end)
    return shown


def make_cues(
    words: Sequence[WordTiming],
    language: str = "en",
    max_chars: int = MAX_CHARS,
    max_seconds: float = MAX_SECONDS,
) -> list[Cue]:
    """Group the spoken words into cues (see the module's docstring)."""
    joiner = "" if language.split("-")[0] in _UNSPACED else " "
    cues: list[Cue] = []
    group: list[WordTiming] = []

    def close() -> None:
        if group:
            text = joiner.join(w.text for w in group).strip()
            if text:
                cues.append(Cue(group[0].start, max(group[-1].end, group[0].start + 0.3), text))
            group.clear()

    for word in sorted((w for w in words if w.text.strip()), key=lambda w: w.start):
        if group:
            longer = len(joiner.join(w.text for w in [*group, word])) > max_chars
            slower = word.end - group[0].start > max_seconds
            if longer or slower:
                close()
        group.append(word)
        if word.text.rstrip().endswith(_SENTENCE_END):
            close()
    close()
    # A cue never overlaps the next one: players show them one at a time.
    return [
        Cue(c.start, min(c.end, cues[i + 1].start) if i + 1 < len(cues) else c.end, c.text)
        for i, c in enumerate(cues)
    ]


def _clock(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def caption_text(text: str) -> str:
    """Caption text as plain text on one or two lines: no blank lines (they end a cue) and
    no markup; a long cue breaks at the space nearest its middle."""
    cleaned = " ".join(text.split()).replace("-->", "->").replace("<", "‹").replace(">", "›")
    if len(cleaned) <= LINE_CHARS:
        return cleaned
    middle = len(cleaned) // 2
    spaces = [i for i, c in enumerate(cleaned) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
    return f"{cleaned[:cut].rstrip()}\n{cleaned[cut:].lstrip()}"


def to_webvtt(cues: Sequence[Cue]) -> str:
    lines = ["WEBVTT", ""]
    for cue in cues:
        lines += [
            f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}",
            caption_text(cue.text),
            "",
        ]
    return "\n".join(lines)


def to_srt(cues: Sequence[Cue]) -> str:
    lines = []
    for n, cue in enumerate(cues, start=1):
        lines += [str(n), f"{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}"]
        lines += [caption_text(cue.text), ""]
    return "\n".join(lines)


def captions_for(script: str, words: Sequence[WordTiming], language: str) -> Captions:
    """The captions of the script as spoken with these word timings."""
    cues = make_cues(display_words(script, words), language)
    shown = tuple(Cue(c.start, c.end, caption_text(c.text)) for c in cues)
    return Captions(to_webvtt(cues), to_srt(cues), shown)


def unburnable(script: str) -> list[str]:
    """The script's characters that burned-in captions cannot draw (none: it can be burned)."""
    from cameofarm.models.reference.subtitles import undrawable

    return undrawable(script)
