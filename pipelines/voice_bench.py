"""How the reference voice does on real people (`cameofarm bench voice`).

Each speaker's real speech is profiled as enrollment profiles it; the reference voice then
speaks each script as that speaker, and the output is measured the way every job's voice
report measures it: speaker similarity (GE2E) to the speaker's own speech and of the stock
voice saying the same script, the share of the script's words a recogniser recovers, and the
closest other speaker (a voice must not sound like somebody else). The targets printed
beside the figures are the farm's: >= 0.75 to the speaker and >= the stock voice + 0.1.

A speaker is a recording of one person (anything ffmpeg decodes), or `FILE.rttm:SPEAKER`:
that speaker's turns, where nobody else speaks, in the recordings an RTTM file names
(`URI.wav` beside it). Real multi-speaker speech with RTTMs installs from the package index:
pyannote.audio's source distribution holds AMI meeting excerpts (README, "Voice").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cameofarm.models.reference.unit_voice import GAIN, TO_CAMEO

SCRIPTS = (
    "Please remember to lock your screen whenever you leave your desk, even for a short break.",
    "If you notice smoke or hear the alarm, leave the building by the nearest exit.",
    "Welcome to the team. Your badge opens the front door and the lifts to the third floor.",
    "Our quarterly results are in, and every region grew faster than we planned.",
    "Never share your password with anyone, not even someone who says they work in support.",
)
GAP_SECONDS = 0.2  # silence put between one speaker's turns


def rttm_speech(rttm: Path, speaker: str, sample_rate: int) -> np.ndarray:
    """`speaker`'s turns in the recordings `rttm` names, with every stretch where somebody
    else speaks cut out, joined with short gaps."""
    from cameofarm.models.media import read_audio

    turns: dict[str, list[tuple[float, float, str]]] = {}
    for n, line in enumerate(rttm.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, length = float(fields[3]), float(fields[4])
            uri, who = fields[1], fields[7]
        except (IndexError, ValueError):
            raise ValueError(f"{rttm}:{n}: not an RTTM SPEAKER line: {line[:80]!r}") from None
        turns.setdefault(uri, []).append((start, start + length, who))
    known = sorted({who for rows in turns.values() for _, _, who in rows})
    if speaker not in known:
        raise ValueError(f"{rttm} has no speaker {speaker!r}; it has: {', '.join(known) or 'none'}")
    gap = np.zeros(int(GAP_SECONDS * sample_rate), np.float32)
    pieces: list[np.ndarray] = []
    for uri, rows in sorted(turns.items()):
        mine = [(a, b) for a, b, who in rows if who == speaker]
        if not mine:
            continue
        audio_path = rttm.parent / f"{uri}.wav"
        if not audio_path.is_file():
            raise ValueError(f"{rttm} names recording {uri}, and {audio_path} is not there")
        audio = read_audio(audio_path, sample_rate)
        alone = np.zeros(len(audio), bool)
        for a, b in mine:
            alone[int(a * sample_rate) : int(b * sample_rate)] = True
        for a, b, who in rows:
            if who != speaker:
                alone[int(a * sample_rate) : int(b * sample_rate)] = False
        edges = np.flatnonzero(np.diff(np.concatenate([[0], alone.view(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            pieces += [audio[a:b], gap]
    if not pieces:
        raise ValueError(f"{rttm}: {speaker} never speaks alone")
    return np.concatenate(pieces)


def speaker_speech(spec: str, sample_rate: int) -> tuple[str, np.ndarray]:
    """(name, speech) for a speaker given as a recording or as `FILE.rttm:SPEAKER`."""
    from cameofarm.models.media import read_audio

    path, _, speaker = spec.partition(":")
    if path.endswith(".rttm") and speaker:
        rttm = Path(path)
        if not rttm.is_file():
            raise ValueError(f"{rttm} is not a file")
        return speaker, rttm_speech(rttm, speaker, sample_rate)
    recording = Path(spec)
    if not recording.is_file():
        raise ValueError(f"{spec} is not a recording or FILE.rttm:SPEAKER")
    samples = read_audio(recording, sample_rate)  # MediaError (a ValueError) names the file
    if len(samples) == 0:
        raise ValueError(f"{recording}: no audio in it")
    return recording.stem, samples


@dataclass(frozen=True)
class Rendered:
    """One script spoken as one speaker, measured."""

    speaker: str
    script: str
    to_cameo: float
    base_to_cameo: float
    words_recovered: float | None
    closest_other: float | None  # the output's similarity to the nearest other speaker
    meets: bool  # the voice report's verdict against the farm's targets
    clear: bool | None  # and whether a recogniser follows its words (None: not measured)

    @property
    def gain(self) -> float:
        return self.to_cameo - self.base_to_cameo

    @property
    def both(self) -> bool:
        """On target and not hard to follow (a render whose words were not measured counts
        as followed)."""
        return self.meets and self.clear is not False


def measure_voice(
    speakers: Sequence[str],
    scripts: Sequence[str] = SCRIPTS,
    min_speech_seconds: float = 30.0,
    timbre: float | None = None,
    echo: Callable[[str], None] = print,
) -> list[Rendered]:
    """Speak every script as every speaker and measure it (see the module); print each row,
    each speaker's summary and the total. `timbre`: the share of each speaker's envelope
    renders take; None: each speaker's calibrated share, as enrollment sets it."""
    from cameofarm.models.reference.speech import Ge2eSpeakerEncoder, similarity
    from cameofarm.models.reference.unit_voice import (
        UnitVoiceBackend,
        WorldFramesProfiler,
        describe_voice,
    )
    from cameofarm.models.reference.voice import SAMPLE_RATE
    from cameofarm.pipelines.quality import stock_voice, voice_quality

    if not scripts or any(not s.strip() for s in scripts):
        raise ValueError("give scripts with words in them")
    heard = [speaker_speech(spec, SAMPLE_RATE) for spec in speakers]
    names = [name for name, _ in heard]
    if len(set(names)) != len(names):
        raise ValueError(f"two speakers have one name: {', '.join(names)}; rename a file")
    encoder = Ge2eSpeakerEncoder()
    voice = UnitVoiceBackend(timbre)
    profiles, enrolled = {}, {}
    for name, speech in heard:
        try:
            profiler = WorldFramesProfiler(calibrated=timbre is None)
            profiles[name] = profiler.profile(speech, SAMPLE_RATE)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        enrolled[name] = encoder.embed(speech, SAMPLE_RATE)
        seconds = profiles[name].speech_seconds
        short = (
            f" — under enrollment's {min_speech_seconds:g} s"
            if seconds < min_speech_seconds
            else ""
        )
        told = (  # what enrollment would tell this speaker
            describe_voice(profiles[name])
            if timbre is None
            else f"renders take {timbre:.0%} of its timbre (as given)"
        )
        echo(f"{name}: {seconds:.1f} s of speech{short}; {told}")
    stock = {script: stock_voice(script, "en", encoder) for script in scripts}
    rows: list[Rendered] = []
    for name in names:
        for script in scripts:
            track = voice.synthesize(script, profiles[name], "en")
            q = voice_quality(
                track.samples, SAMPLE_RATE, script, "en", enrolled[name], encoder, stock[script]
            )
            output = encoder.embed(track.samples, SAMPLE_RATE)
            others = [similarity(output, enrolled[o]) for o in names if o != name]
            row = Rendered(
                name,
                script,
                q.to_cameo,
                q.base_to_cameo,
                q.words_recovered,
                max(others) if others else None,
                bool(q.meets_targets),
                q.clear,
            )
            rows.append(row)
            other = f", nearest other {row.closest_other:.3f}" if others else ""
            echo(
                f"  {name}: {row.to_cameo:.3f} to the speaker (stock {row.base_to_cameo:.3f}, "
                f"gain {row.gain:+.3f}){other}; "
                f"{_share(row.words_recovered)} of the words recovered"
                f"{'' if row.meets else '  [below target]'}"
                f"{'  [hard to follow]' if row.clear is False else ''}  — {_clip(script)}"
            )
    plural = "s" * (len(scripts) != 1)
    echo(f"per speaker, over {len(scripts)} script{plural} (targets {TO_CAMEO}, stock + {GAIN}):")
    for name in names:
        mine = [r for r in rows if r.speaker == name]
        echo(
            f"  {name}: to the speaker {np.mean([r.to_cameo for r in mine]):.3f} avg "
            f"(min {min(r.to_cameo for r in mine):.3f}), gain min "
            f"{min(r.gain for r in mine):+.3f}, words recovered "
            f"{_share(_mean([r.words_recovered for r in mine]))} avg; "
            f"{sum(r.meets for r in mine)}/{len(mine)} on target, "
            f"{_clear(mine)}/{len(mine)} clear, {sum(r.both for r in mine)}/{len(mine)} both"
        )
    echo(
        f"{sum(r.meets for r in rows)}/{len(rows)} renders on target, "
        f"{_clear(rows)}/{len(rows)} clear, {sum(r.both for r in rows)}/{len(rows)} both"
    )
    return rows


def _clear(rows: list[Rendered]) -> int:
    return sum(r.clear is not False for r in rows)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _clip(script: str, width: int = 40) -> str:
    return script if len(script) <= width else script[:width].rstrip() + "…"
