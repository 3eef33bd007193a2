"""Dialogue scripts: a video that casts two cameos speaks lines `A: ... / B: ...`, each in its
own cameo's voice (A is the job's first cameo, B its second), one after the other with a short
pause; each cameo's actor moves its lips on its own lines only."""

from __future__ import annotations

import re

import numpy as np
from cameofarm.models.data import PhonemeTiming, SpeechTrack, WordTiming

SPEAKERS = "AB"
LINE_GAP = 0.35  # seconds of silence between two lines: a turn, not a run-on
MAX_LINES = 40
# A speaker's label: one capital letter and a colon, at the start or after "/" or a new line.
_LABEL = re.compile(r"(?:^|[/\n])\s*([A-Z])\s*:")


class DialogueError(ValueError):
    """The script is not a dialogue the job's cameos can speak; the message says why."""


def parse_dialogue(script: str, cameos: int) -> list[tuple[int, str]]:
    """The script's lines as (speaker index, text). One cameo speaks the whole script; two
    speak labelled lines, and each must speak at least once."""
    if cameos == 1:
        return [(0, script)]
    labels = ", ".join(f"{SPEAKERS[k]}:" for k in range(cameos))
    marks = list(_LABEL.finditer(script))
    if not marks or script[: marks[0].start()].strip():
        raise DialogueError(
            f"a video of {cameos} cameos speaks a dialogue: write the script as lines "
            f"'A: ... / B: ...' ({labels} in the order the cameos are named), one per turn"
        )
    lines = []
    for number, (mark, after) in enumerate(zip(marks, [*marks[1:], None], strict=True), 1):
        label = mark.group(1)
        text = script[mark.end() : after.start() if after is not None else len(script)].strip()
        speaker = ord(label) - ord("A")
        if not 0 <= speaker < cameos:
            raise DialogueError(
                f"line {number} is spoken by {label}, but the video casts {cameos} cameos "
                f"({labels})"
            )
        if not any(ch.isalnum() for ch in text):
            raise DialogueError(f"line {number} ({label}:) has no words to speak")
        lines.append((speaker, text))
    if len(lines) > MAX_LINES:
        raise DialogueError(f"the dialogue has {len(lines)} lines; the limit is {MAX_LINES}")
    silent = [SPEAKERS[k] for k in range(cameos) if all(who != k for who, _ in lines)]
    if silent:
        raise DialogueError(
            f"{' and '.join(silent)} never speaks: each cast cameo needs at least one line"
        )
    return lines


def dialogue_script(lines: list[tuple[int, str]]) -> str:
    """The stored form of a dialogue (parse_dialogue reads it back to the same lines)."""
    return " / ".join(f"{SPEAKERS[who]}: {text}" for who, text in lines)


def _shifted(track: SpeechTrack, offset: float) -> tuple[list[PhonemeTiming], list[WordTiming]]:
    phonemes = [PhonemeTiming(p.symbol, p.start + offset, p.end + offset) for p in track.phonemes]
    words = [WordTiming(w.text, w.start + offset, w.end + offset) for w in track.words]
    return phonemes, words


def join_lines(
    lines: list[SpeechTrack], speakers: list[int], cameos: int, gap: float = LINE_GAP
) -> tuple[SpeechTrack, list[SpeechTrack]]:
    """The lines one after the other (gap seconds apart) as the video's speech, and each
    speaker's own track on the same timeline: their lines, silence where the other speaks."""
    rate = lines[0].sample_rate
    if any(line.sample_rate != rate for line in lines):
        raise ValueError("the dialogue's lines were spoken at different sample rates")
    pause = round(gap * rate)
    total = sum(len(line.samples) for line in lines) + pause * (len(lines) - 1)
    mixed = np.zeros(total, np.float32)
    own = [np.zeros(total, np.float32) for _ in range(cameos)]
    timings: list[tuple[list[PhonemeTiming], list[WordTiming]]] = [([], []) for _ in range(cameos)]
    at = 0
    for line, who in zip(lines, speakers, strict=True):
        n = len(line.samples)
        mixed[at : at + n] = line.samples
        own[who][at : at + n] = line.samples
        phonemes, words = _shifted(line, at / rate)
        timings[who][0].extend(phonemes)
        timings[who][1].extend(words)
        at += n + pause
    every = sorted((p for ph, _ in timings for p in ph), key=lambda p: p.start)
    said = sorted((w for _, ws in timings for w in ws), key=lambda w: w.start)
    joined = SpeechTrack(mixed, rate, tuple(every), tuple(said))
    tracks = [
        SpeechTrack(own[k], rate, tuple(timings[k][0]), tuple(timings[k][1])) for k in range(cameos)
    ]
    return joined, tracks
