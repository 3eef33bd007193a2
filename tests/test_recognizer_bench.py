"""`cameofarm bench recognizer`: reads transcribed recordings in both layouts, measures both
recognisers on them and prints per-recording and total word error rates; bad folders are
refused by name."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

SAID = {  # phrase words (the liveness vocabulary) and a sentence outside it
    "one": "amber river seven falcon maple two copper",
    "two": "the meeting starts at nine in the main hall",
}


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """The two scripts spoken by Debian's flite (the voice the liveness figures use)."""
    from cameofarm.models.media import write_wav
    from cameofarm.models.reference import flite

    if not flite.available():
        pytest.skip("flite is not installed (make setup installs it)")
    folder = tmp_path_factory.mktemp("spoken")
    for name, text in SAID.items():
        speech = flite.FliteEngine().speak(text, timed=False)
        write_wav(folder / f"{name}.wav", speech.samples, speech.sample_rate)
    return folder


def _bench(*folders):
    from cameofarm.service.cli import cli

    return CliRunner().invoke(cli, ["bench", "recognizer", *map(str, folders)])


def test_a_sphinx_transcription_is_heard_and_scored(spoken, tmp_path):
    listing = "\n".join(f"<s> {text} </s> ({name})" for name, text in SAID.items())
    (spoken / "test.transcription").write_text(listing + "\n")
    try:
        out = _bench(spoken)
    finally:
        (spoken / "test.transcription").unlink()
    assert out.exit_code == 0, out.output
    assert "2 transcribed recordings" in out.output
    errors = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"(\w+)\.wav: [\d.]+ s, \d+ words; phrase (\d+) errors", out.output)
    }
    assert errors.keys() == {"one", "two"}
    assert errors["one"] <= 1  # flite's phrase words: 4 % word error rate measured (README)
    total = re.search(r"over (\d+) words: phrase recogniser ([\d.]+)%", out.output)
    assert total is not None and int(total.group(1)) == 16, out.output


def test_text_files_beside_the_recordings_are_read_too(spoken):
    for name, text in SAID.items():
        (spoken / f"{name}.txt").write_text(text)
    out = _bench(spoken)
    assert out.exit_code == 0, out.output
    assert "2 transcribed recordings" in out.output and "over 16 words" in out.output


def test_folders_without_transcribed_recordings_are_refused_by_name(tmp_path):
    out = _bench(tmp_path)
    assert out.exit_code == 1 and f"{tmp_path} holds no transcribed recordings" in out.output
    (tmp_path / "x.transcription").write_text("<s> hello there </s> (missing)\n")
    out = _bench(tmp_path)
    assert out.exit_code == 1 and "no recording missing.wav beside it" in out.output
    (tmp_path / "x.transcription").write_text("hello there with no id\n")
    out = _bench(tmp_path)
    assert out.exit_code == 1 and "not '<s> words </s> (fileid)'" in out.output
