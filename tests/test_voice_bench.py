"""`cameofarm bench voice`: speakers from recordings or from an RTTM's turns (others' speech
cut out), every script spoken as every speaker and scored against the farm's targets; bad
speakers refused by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cameofarm.models.media import write_wav
from cameofarm.pipelines.voice_bench import GAP_SECONDS, rttm_speech
from click.testing import CliRunner

from tests.conftest import fixture_path

RATE = 16000


def _bench(*args):
    from cameofarm.service.cli import cli

    return CliRunner().invoke(cli, ["bench", "voice", *map(str, args)])


def _rttm(path, rows):
    path.write_text(
        "".join(
            f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {who} <NA> <NA>\n"
            for uri, a, b, who in rows
        )
    )
    return path


def test_an_rttm_speaker_is_their_turns_with_everyone_else_cut_out(tmp_path):
    # A recording whose every sample tells its own time, so what was kept can be read back.
    ramp = (np.arange(3 * RATE, dtype=np.float32) / (3 * RATE)) * 0.5
    write_wav(tmp_path / "meeting.wav", ramp, RATE)
    rttm = _rttm(
        tmp_path / "m.rttm",
        [("meeting", 0.0, 2.0, "ann"), ("meeting", 1.5, 3.0, "bob")],
    )
    ann = rttm_speech(rttm, "ann", RATE)
    bob = rttm_speech(rttm, "bob", RATE)
    gap = int(GAP_SECONDS * RATE)
    assert len(ann) == int(1.5 * RATE) + gap  # 0-1.5 s: from 1.5 s Bob speaks too
    assert len(bob) == int(1.0 * RATE) + gap  # 2-3 s: Ann until 2 s
    assert ann[: int(1.5 * RATE)].max() < 0.5 * 1.5 / 3 + 1e-3
    assert bob[:RATE].min() > 0.5 * 2.0 / 3 - 1e-3
    assert not ann[-gap:].any()

    with pytest.raises(ValueError, match="no speaker 'cy'; it has: ann, bob"):
        rttm_speech(rttm, "cy", RATE)
    (tmp_path / "meeting.wav").unlink()
    with pytest.raises(ValueError, match="names recording meeting"):
        rttm_speech(rttm, "ann", RATE)
    (tmp_path / "bad.rttm").write_text("SPEAKER meeting 1 zero 1.0 <NA> <NA> ann\n")
    with pytest.raises(ValueError, match=r"bad\.rttm:1: not an RTTM SPEAKER line"):
        rttm_speech(tmp_path / "bad.rttm", "ann", RATE)


def test_bad_speakers_are_refused_by_name(tmp_path):
    out = _bench(tmp_path / "nobody.wav")
    assert out.exit_code != 0 and "nobody.wav is not a recording or FILE.rttm:SPEAKER" in out.output
    (tmp_path / "noise.wav").write_bytes(b"RIFF not really a wav")
    out = _bench(tmp_path / "noise.wav")
    assert out.exit_code != 0 and "noise.wav" in out.output and "decode" in out.output
    out = _bench(tmp_path / "noise.wav", "--timbre", "1.5")
    assert out.exit_code == 2 and "--timbre" in out.output
    write_wav(tmp_path / "silence.wav", np.zeros(5 * RATE, np.float32), RATE)
    out = _bench(tmp_path / "silence.wav")
    assert out.exit_code != 0 and "silence: too little speech" in out.output


def test_real_speakers_from_an_rttm_are_measured_against_the_targets(tmp_path):
    """The fixtures' man and woman as one "meeting" with an RTTM: each is profiled from
    their own turns, the script is spoken as each and scored; the man, with the speech
    enrollment asks for, meets the targets."""
    from cameofarm.models.media import read_audio
    from cameofarm.models.reference import flite

    if not flite.available():
        pytest.skip("flite is not installed (make setup installs it): the English base voice")
    man = read_audio(fixture_path("speech_en_60s.wav"), RATE)[: 40 * RATE]
    woman = read_audio(fixture_path("talking_512_with_audio.mp4"), RATE)
    write_wav(tmp_path / "both.wav", np.concatenate([man, woman]), RATE)
    rttm = _rttm(
        tmp_path / "both.rttm",
        [("both", 0.0, 40.0, "man"), ("both", 40.0, 40.0 + len(woman) / RATE, "woman")],
    )
    script = "Please remember to lock your screen whenever you leave your desk."
    out = _bench(f"{rttm}:man", f"{rttm}:woman", "--script", script)
    print(out.output)  # the figures, in the test log
    assert out.exit_code == 0, out.output
    assert re.search(r"woman: \d\.\d s of speech — under enrollment's 30 s", out.output)
    # Each speaker's line is what enrollment would tell them: the woman's words suffer.
    assert re.search(r"woman: .*% of the words recovered; .*HARD TO FOLLOW", out.output)
    assert re.search(r"man: .*the words are clear\)", out.output)
    row = re.search(
        r"  man: ([\d.]+) to the speaker \(stock ([\d.]+), gain [-+][\d.]+\), nearest other "
        r"([\d.]+); (\d+)% of the words recovered",
        out.output,
    )
    assert row is not None, out.output
    to_cameo, stock, other, words = map(float, row.groups())
    assert to_cameo >= 0.75 and to_cameo >= stock + 0.1 and other < to_cameo - 0.15
    assert words >= 50
    assert re.search(r"  man: .*; 1/1 on target, 1/1 clear, 1/1 both", out.output)
    # The woman's render loses its words, and the bench says so per render and in the total.
    assert re.search(r"  woman: .*\[hard to follow\]", out.output)
    assert re.search(r"  woman: .* on target, 0/1 clear", out.output)
    assert re.search(r"[12]/2 renders on target, 1/2 clear, 1/2 both", out.output)
