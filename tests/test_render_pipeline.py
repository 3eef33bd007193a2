"""The render pipeline through the in-process pools (same actor shells, no Ray)."""

from __future__ import annotations

import hashlib
import itertools

import cv2
import numpy as np
import pytest
from cameofarm.configs import StageName
from cameofarm.pipelines.render import JobCancelled, RenderError, RenderJob, plan_frames, render_job
from cameofarm.storage.db import StageTimingRow


def _job(storage, farm_config, cameo, script, captions="sidecar"):
    from cameofarm.cluster.jobs import submit_job

    view = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo.id],
        script=script,
        tier="plus",
        customer="tester",
        captions=captions,
    )
    return RenderJob(view.id, "plus", (cameo.id,), view.script, captions=view.captions)


def test_plan_frames_enforces_the_tier_limit():
    assert plan_frames(2.0, 25, 5.0) == 58
    assert plan_frames(4.9, 25, 5.0) == 125  # the tail is cut at the limit
    with pytest.raises(RenderError, match="tier allows 5 s"):
        plan_frames(5.2, 25, 5.0)


def test_render_publishes_a_signed_mp4_and_times_every_stage(farm_config, storage, cameo, pools):
    from cameofarm.models.media import probe_mp4
    from cameofarm.models.reference.provenance import verify_mp4

    seen, counts, quality = [], {}, {}
    job = _job(storage, farm_config, cameo, "Short and sweet.")
    result = render_job(
        job,
        farm_config,
        pools,
        storage,
        progress=lambda stage, frac: seen.append((str(stage), frac)),
        finalize=lambda _key, report: quality.update(report),
        stage_progress=lambda stage, done, total: counts.setdefault(stage, []).append(
            (done, total)
        ),
    )
    assert result.output_key == f"outputs/{job.job_id}.mp4"
    path = storage.objects.locate(result.output_key)
    rep = probe_mp4(path)
    assert (rep.width, rep.height, rep.frames) == (1280, 720, result.frames)
    data = storage.objects.get_bytes(result.output_key)
    manifest = verify_mp4(data, (storage.keys_dir / "root.pem").read_bytes())
    assert manifest.valid
    # Captions beside the video, their text covered by its manifest.
    vtt = storage.objects.get_bytes(f"outputs/{job.job_id}.vtt")
    srt = storage.objects.get_bytes(f"outputs/{job.job_id}.srt")
    assert vtt.startswith(b"WEBVTT\n\n00:00:00.") and b"Short and sweet." in vtt
    assert srt.startswith(b"1\n00:00:00,") and b"Short and sweet." in srt
    assert manifest.manifest_id.startswith("urn:c2pa:")
    assert quality["c2pa"] == {"manifest_id": manifest.manifest_id, "state": "Trusted"}
    referenced = manifest.extra["captions"]
    assert referenced["vtt"] == f"outputs/{job.job_id}.vtt"
    assert referenced["vtt_sha256"] == hashlib.sha256(vtt).hexdigest()
    assert referenced["srt_sha256"] == hashlib.sha256(srt).hexdigest()
    assert referenced["burned"] is False
    assert [s for s, _ in seen][-1] == "published"
    with storage.db.session() as s:
        rows = s.query(StageTimingRow).filter_by(job_id=job.job_id).all()
    assert {r.stage for r in rows} == {s.value for s in StageName}
    for r in rows:  # each row is one real call: its replica, and times that add up
        assert r.replica == f"{r.stage}-local"
        assert r.submitted_at <= r.started_at <= r.finished_at
        assert r.seconds > 0
        assert r.seconds == pytest.approx(r.finished_at - r.started_at, abs=0.01)
    assert sum(r.frames for r in rows if r.stage == "face_swap") == result.frames
    # Chunks stream: each goes through its stages in order, and a later chunk is already in
    # base video while an earlier one is still in lip sync.
    call = {(r.stage, r.chunk): r for r in rows}
    chunks = -(-result.frames // farm_config.scheduler.chunk_frames)
    chain = ["base_video", "face_swap", "lip_sync", "composite"]
    for k in range(chunks):
        for before, after in itertools.pairwise(chain):
            assert call[(before, k)].finished_at <= call[(after, k)].started_at
    assert any(
        call[("base_video", k + 1)].started_at < call[("lip_sync", k)].finished_at
        for k in range(chunks - 1)
    )
    # Each stage reported its calls as they answered, from none to all (what `top` shows).
    calls = {"voice": 1, "base_video": chunks, "face_swap": chunks, "lip_sync": chunks}
    # each chunk's face measurement and encoding, and the call that assembles the segments
    calls["composite"] = 2 * chunks + 1
    assert list(counts) == ["voice", "base_video", "face_swap", "lip_sync", "composite"]
    for stage, reports in counts.items():
        assert {t for _, t in reports} == {calls[stage]}, stage
        assert [d for d, _ in reports] == sorted(d for d, _ in reports), stage
        assert reports[0][0] == 0 and reports[-1][0] == calls[stage], stage


def test_a_slow_progress_write_never_holds_the_chunks(farm_config, storage, cameo, pools):
    """The job's stage goes to the database off the chunks' path: a write that takes until
    every chunk is through lip sync does not stop them getting there."""
    import threading

    through = threading.Event()
    held = []

    def progress(stage, frac):
        if threading.current_thread().name.endswith("-progress_0"):  # the stream's writes
            held.append(through.wait(timeout=120))

    def stage_progress(stage, done, total):
        if stage == "lip_sync" and done == total:
            through.set()

    job = _job(storage, farm_config, cameo, "Short and sweet.")
    render_job(
        job,
        farm_config,
        pools,
        storage,
        progress=progress,
        finalize=lambda _key, _report: None,
        stage_progress=stage_progress,
    )
    assert held and all(held)  # each write waited, and none ran out of time


def test_cancelled_job_publishes_nothing(farm_config, storage, cameo, pools):
    calls = {"n": 0}

    def still_wanted():
        calls["n"] += 1
        return calls["n"] < 3  # cancelled after base video

    job = _job(storage, farm_config, cameo, "Never published.")
    with pytest.raises(JobCancelled):
        render_job(job, farm_config, pools, storage, still_wanted=still_wanted)
    assert list(storage.objects.list("outputs/")) == []


def test_submit_stores_background_and_refuses_bad_ones(farm_config, storage, cameo, tmp_path):
    from cameofarm.service.jobs_api import SubmitError, submit_render

    good = tmp_path / "bg.jpg"
    cv2.imwrite(str(good), np.full((400, 600, 3), 200, np.uint8))
    job = submit_render(
        farm_config, storage, [cameo.id], "Hi.", "plus", "tester", background=str(good)
    )
    assert job.background_key and storage.objects.exists(job.background_key)
    bad = tmp_path / "bg.png"
    bad.write_bytes(b"<script>alert(1)</script>")
    with pytest.raises(SubmitError, match="not an image"):
        submit_render(
            farm_config, storage, [cameo.id], "Hi.", "plus", "tester", background=str(bad)
        )
    before = set(storage.objects.list("backgrounds/"))
    with pytest.raises(SubmitError, match="unknown tier"):
        submit_render(
            farm_config, storage, [cameo.id], "Hi.", "gold", "tester", background=str(good)
        )
    assert set(storage.objects.list("backgrounds/")) == before  # refused: nothing left behind


def test_hostile_script_is_spoken_not_interpreted_and_burned_in_as_text(
    farm_config, storage, cameo, pools
):
    from cameofarm.models.media import probe_mp4, read_frames
    from cameofarm.models.reference.compositor import caption_bottom
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.models.reference.subtitles import caption_patch
    from cameofarm.models.reference.voice import clean_script

    text = clean_script("'; DROP TABLE jobs; -- <speak><audio src='x'/></speak>\x1b[2J")
    assert "<" not in text and "\x1b" not in text
    job = _job(storage, farm_config, cameo, "Robert'); DROP TABLE jobs;--", captions="burned")
    result = render_job(job, farm_config, pools, storage)
    # Rendered and signed like any script, and spoken: the audio lasts as long as the words.
    data = storage.objects.get_bytes(result.output_key)
    manifest = verify_mp4(data, (storage.keys_dir / "root.pem").read_bytes())
    assert manifest.valid and manifest.extra["captions"]["burned"] is True
    # Its captions show the words as plain text: nothing in them is markup or a command.
    vtt = storage.objects.get_bytes(f"outputs/{job.job_id}.vtt").decode()
    assert vtt.splitlines()[3] == "Robert'); DROP TABLE jobs;--"
    report = probe_mp4(storage.objects.locate(result.output_key))
    assert report.audio_codec == "aac" and report.audio_seconds > 1.0
    with storage.db.session() as s:  # the tables it names are all still there
        assert s.query(StageTimingRow).filter_by(job_id=job.job_id).count() > 0
    # The same words are burned into the frames while they are spoken: the caption's box
    # darkens the picture under it, with white text, and is gone in the silent tail.
    patch, x, y = caption_patch(vtt.splitlines()[3], 1280, 720, caption_bottom(1280, 720))
    h, w = patch.shape[:2]
    last = result.frames - 1
    frames = read_frames(storage.objects.locate(result.output_key), [10, last])
    during, tail = (frames[i][y : y + h, x : x + w].astype(float) for i in (10, last))
    darkened = (during.mean(axis=2) < 0.55 * tail.mean(axis=2)).mean()
    white = (during > 215).all(axis=2).mean()
    assert darkened > 0.5 and white > 0.03, (darkened, white)


def test_every_output_gets_a_voice_report_that_cameofarm_quality_reproduces(
    farm_config, storage, cameo, pools, monkeypatch
):
    import json

    from cameofarm.cluster.jobs import dispatch_job, finish_published, get_job
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    job = _job(storage, farm_config, cameo, "Welcome to the farm; this is my voice, rendered.")
    assert dispatch_job(storage.db, farm_config, job.job_id) is not None
    result = render_job(
        job,
        farm_config,
        pools,
        storage,
        finalize=lambda key, q: finish_published(storage.db, farm_config, job.job_id, key, q),
    )
    stored = get_job(storage.db, job.job_id).quality["voice"]
    assert stored["encoder"] == "resemblyzer:ge2e@1"
    for figure in ("to_cameo", "base_to_cameo", "to_base"):
        assert -1.0 <= stored[figure] <= 1.0
    # The CLI measures the published file itself (after AAC) against the same cameo.
    monkeypatch.setenv("CAMEOFARM__DATA_DIR", farm_config.data_dir)
    video = storage.objects.locate(result.output_key)
    out = CliRunner().invoke(cli, ["quality", video, "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["cameo"] == cameo.id and report["job"] == job.job_id
    assert report["stored"]["voice"] == stored
    assert report["voice"]["to_cameo"] == pytest.approx(stored["to_cameo"], abs=0.03)
    assert report["voice"]["base_to_cameo"] == pytest.approx(stored["base_to_cameo"], abs=0.01)
    text = CliRunner().invoke(cli, ["quality", video])
    assert "similar to the cameo's enrolled speech" in text.output


def test_a_voice_measurement_that_cannot_be_made_does_not_stop_the_video(
    farm_config, storage, cameo, pools
):
    from cameofarm.cluster.jobs import dispatch_job, finish_published, get_job

    class LosingMeasurements:
        def __getattr__(self, name):
            return getattr(pools, name)

        def elsewhere(self, fn, *args):
            raise RuntimeError("the worker died while measuring")

    job = _job(storage, farm_config, cameo, "The video goes out all the same.")
    assert dispatch_job(storage.db, farm_config, job.job_id) is not None
    result = render_job(
        job,
        farm_config,
        LosingMeasurements(),
        storage,
        finalize=lambda key, q: finish_published(storage.db, farm_config, job.job_id, key, q),
    )
    assert storage.objects.exists(result.output_key)
    voice = get_job(storage.db, job.job_id).quality["voice"]
    assert "could not be measured" in voice["unmeasured"] and "worker died" in voice["unmeasured"]


def test_quality_outside_a_farm_says_where_to_run_it(tmp_path, monkeypatch):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    monkeypatch.setenv("CAMEOFARM__DATA_DIR", str(tmp_path / "nofarm"))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not a video")
    out = CliRunner().invoke(cli, ["quality", str(video)])
    assert out.exit_code == 1 and "no farm at" in out.output
    assert not (tmp_path / "nofarm").exists()


def test_a_measuring_process_measures_a_scripts_stock_voice_once(
    farm_config, storage, pools, cameo, monkeypatch
):
    """The stock voice saying a script is the same for every cameo: a batch's script said by
    many cameos has it measured once per measuring process."""
    from cameofarm.pipelines import quality
    from cameofarm.pipelines.quality import EnrolledVoice, measure_voice
    from cameofarm.storage.fetch import ObjectFetcher

    made = []
    real = quality.stock_voice

    def counted(script, language, encoder):
        made.append(script)
        return real(script, language, encoder)

    monkeypatch.setattr(quality, "stock_voice", counted)
    quality._stock_said.cache_clear()
    fetcher = ObjectFetcher(farm_config.storage, storage.data_dir)
    voice = pools.actors[StageName.VOICE]
    enrolled = EnrolledVoice.of(cameo)
    reports = []
    for script in ("Welcome to the team, we are glad you are here.",) * 2 + ("Goodbye now.",):
        track, _ = voice.call("voice", (5.0, 0.0, -1), script, cameo.assets_key, "en")
        reports.append(
            measure_voice(fetcher, farm_config.enrollment, track, script, "en", enrolled)
        )
    assert made == ["Welcome to the team, we are glad you are here.", "Goodbye now."]
    assert reports[0]["base_to_cameo"] == reports[1]["base_to_cameo"]
    assert reports[0]["base_words_recovered"] == reports[1]["base_words_recovered"]
    assert all(0.0 <= r["to_cameo"] <= 1.0 for r in reports[:2])
