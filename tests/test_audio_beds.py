"""Audio beds: checked on upload (decodes, length, not silent, no speech), mixed under the
dialogue at the asked level relative to the speech, and carried through a render."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from cameofarm.models.reference.voice import SAMPLE_RATE
from cameofarm.pipelines.audio_beds import AudioBedError, check_audio_bed, mix_bed


def _music(seconds: float = 3.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A sustained chord with a slow swell: music-like, with no speech in it."""
    t = np.arange(int(seconds * sr)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0))
    return (0.1 * chord * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def _wav(samples: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12)


def test_an_audio_bed_is_checked_on_upload():
    from cameofarm.models.reference.voice import plain_speech

    bed = check_audio_bed(_wav(_music(3.0, 44100), 44100))  # resampled to the voice's rate
    assert abs(len(bed) / SAMPLE_RATE - 3.0) < 0.01
    for data, match in [
        (_wav(np.zeros(SAMPLE_RATE * 2, np.float32)), r"silent \(-\d+ dBFS\)"),
        (_wav(_music(0.5)), r"0\.5 s long; use 1 s to 10 min"),
        (b"not a sound file at all" * 50, r"not audio it can decode"),
    ]:
        with pytest.raises(AudioBedError, match=match):
            check_audio_bed(data)
    speech = plain_speech("Welcome to the safety training, everyone. Please listen.", "en")
    with pytest.raises(AudioBedError, match=r"has speech in \d+% of it; .* cast cameo's"):
        check_audio_bed(_wav(speech.samples, speech.sample_rate))


def test_the_bed_sits_at_its_level_under_the_speech_looped_and_faded():
    rng = np.random.default_rng(0)
    sr = SAMPLE_RATE
    speech = (0.2 * rng.standard_normal(sr * 4)).astype(np.float32)  # 4 s, steady level
    bed = _music(1.5)  # shorter than the speech: looped
    mixed = mix_bed(speech, sr, bed, -18.0)
    assert len(mixed) == len(speech) and np.max(np.abs(mixed)) <= 0.99 + 1e-6
    under = mixed - speech
    middle = under[sr : 3 * sr]  # past the fades
    assert abs((_rms_db(middle) - _rms_db(speech)) - (-18.0)) < 1.0
    assert np.abs(under[:10]).max() < 1e-3 and np.abs(under[-10:]).max() < 1e-3  # faded
    assert (
        abs(
            _rms_db(mix_bed(speech, sr, bed, -30.0)[sr : 3 * sr] - speech[sr : 3 * sr])
            - (_rms_db(speech) - 30)
        )
        < 1.0
    )
    with pytest.raises(ValueError, match=r"bed level must be -40 to -6 dB"):
        mix_bed(speech, sr, bed, 0.0)


def test_a_render_mixes_the_bed_under_the_speech_and_names_it(farm_config, storage, cameo, pools):
    from cameofarm.cluster.jobs import JobError, submit_job
    from cameofarm.models.media import read_audio
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.pipelines.audio_beds import store_audio_bed
    from cameofarm.pipelines.render import RenderJob, render_job

    stored = store_audio_bed(storage.objects, _wav(_music(2.0)), "tester")
    key = f"audio-beds/tester/{stored['audio_bed_id']}.wav"
    ask = {"cameo_ids": [cameo.id], "script": "Short and sweet.", "tier": "plus"}
    with pytest.raises(JobError, match=r"level must be -40 to -6 dB"):
        submit_job(storage.db, farm_config, **ask, customer="tester",
                   audio_bed={"key": key, "level_db": 3})  # fmt: skip
    outputs = {}
    for bed in (None, {"key": key, "level_db": -12.0}):
        view = submit_job(storage.db, farm_config, **ask, customer="tester", audio_bed=bed)
        assert view.audio_bed == bed
        job = RenderJob(view.id, "plus", (cameo.id,), view.script, audio_bed=view.audio_bed)
        result = render_job(job, farm_config, pools, storage)
        outputs[bed is None] = storage.objects.locate(result.output_key)
    plain, bedded = (read_audio(outputs[k], SAMPLE_RATE) for k in (True, False))
    n = min(len(plain), len(bedded))
    # The same speech in both (the voice is deterministic): what the bedded video adds is the
    # bed, at about its level under the speech (AAC's own error is far below it).
    added = _rms_db(bedded[:n] - plain[:n]) - _rms_db(plain[:n])
    print(f"bed asked at -12 dB under the speech, measured {added:.1f} dB")  # shown with -s
    assert -16.0 < added < -8.0, added
    root = (storage.keys_dir / "root.pem").read_bytes()
    report = verify_mp4(storage.objects.get_bytes(f"outputs/{view.id}.mp4"), root)
    assert report.valid and report.extra["audio_bed"] == stored["audio_bed_id"]


def test_the_cli_refuses_a_bed_level_without_a_bed(tmp_path):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    args = ["submit", "--cameo", "cam_x", "--script", "Hello.", "--bed-level", "-20"]
    out = CliRunner().invoke(cli, args, env={"CAMEOFARM__DATA_DIR": str(tmp_path)})
    assert out.exit_code == 1 and "add --audio-bed FILE" in out.output
