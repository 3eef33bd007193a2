from __future__ import annotations

import pytest
from cameofarm.cluster.jobs import (
    JobError,
    JobStatus,
    cancel_job,
    get_job,
    requeue_interrupted,
    set_job_status,
    submit_job,
)
from cameofarm.storage.db import JobEventRow

pytestmark = pytest.mark.databases


def _submit(storage, farm_config, cameo_row, **kw):
    args = dict(cameo_ids=[cameo_row.id], script="Hello there.", tier="plus", customer="tester")
    args.update(kw)
    return submit_job(storage.db, farm_config, **args)


def test_lifecycle_writes_one_event_per_transition(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    assert job.status is JobStatus.QUEUED
    set_job_status(storage.db, job.id, JobStatus.RUNNING, "dispatched")
    done = set_job_status(storage.db, job.id, JobStatus.SUCCEEDED, "ok", output_key="outputs/x")
    assert done.finished_at is not None and done.attempts == 1
    with storage.db.session() as s:
        events = [
            (e.from_status, e.to_status)
            for e in s.query(JobEventRow).filter_by(job_id=job.id).order_by(JobEventRow.id)
        ]
    assert events == [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "SUCCEEDED")]


def test_illegal_transitions_are_refused(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    with pytest.raises(JobError):
        set_job_status(storage.db, job.id, JobStatus.SUCCEEDED)
    set_job_status(storage.db, job.id, JobStatus.CANCELLED)
    with pytest.raises(JobError):
        set_job_status(storage.db, job.id, JobStatus.RUNNING)
    with pytest.raises(JobError, match="already CANCELLED"):
        cancel_job(storage.db, job.id)


def test_restart_requeues_running_jobs_and_counts_attempts(storage, farm_config, cameo_row):
    a = _submit(storage, farm_config, cameo_row)
    b = _submit(storage, farm_config, cameo_row)
    set_job_status(storage.db, a.id, JobStatus.RUNNING)
    # the farm dies here; a new scheduler starts and recovers
    assert requeue_interrupted(storage.db, "farm restarted") == [a.id]
    assert get_job(storage.db, a.id).status is JobStatus.QUEUED
    assert get_job(storage.db, b.id).status is JobStatus.QUEUED
    again = set_job_status(storage.db, a.id, JobStatus.RUNNING)
    assert again.attempts == 2


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"tier": "gold"}, "unknown tier"),
        ({"cameo_ids": ["cam_nope"]}, "no cameo"),
        ({"script": "   \x00\x07  "}, "no speakable words"),
        ({"script": "word " * 200}, "shorten"),
        ({"cameo_ids": []}, "at least one cameo"),
    ],
)
def test_bad_requests_are_refused_and_store_nothing(storage, farm_config, cameo_row, kw, message):
    from cameofarm.cluster.jobs import list_jobs

    with pytest.raises(JobError, match=message):
        _submit(storage, farm_config, cameo_row, **kw)
    assert list_jobs(storage.db) == []


def test_unknown_job_id(storage):
    with pytest.raises(LookupError, match="no job"):
        get_job(storage.db, "job_missing")


EIGHTEEN_WORDS = (
    "Welcome to the quarterly safety training, today we walk through the three steps of "
    "reporting any incident quickly."
)


def test_length_is_decided_once_at_submit_with_the_renders_own_synthesis(
    storage, farm_config, cameo_row
):
    from cameofarm.models.reference.unit_voice import base_speech
    from cameofarm.pipelines.render import plan_frames

    assert len(EIGHTEEN_WORDS.split()) == 18  # under the 4 words/s early check for plus (20)
    spoken = base_speech(EIGHTEEN_WORDS, "en").duration
    assert spoken > farm_config.tier("plus").max_seconds  # so the render would refuse it
    with pytest.raises(JobError, match=r"takes \d+\.\d s to speak.*choose a longer tier \(pro\)"):
        _submit(storage, farm_config, cameo_row, script=EIGHTEEN_WORDS)
    job = _submit(storage, farm_config, cameo_row, script=EIGHTEEN_WORDS, tier="pro")
    assert job.speech_seconds == pytest.approx(spoken, abs=0.05) and job.language == "en"
    plan_frames(job.speech_seconds, 25, farm_config.tier("pro").max_seconds)  # renders
    # the longest tier's refusal does not suggest a longer one
    with pytest.raises(JobError) as err:
        _submit(storage, farm_config, cameo_row, script=EIGHTEEN_WORDS * 4, tier="pro")
    assert "shorten it" in str(err.value) and "longer tier" not in str(err.value)


def test_languages_are_detected_spoken_or_refused_never_spelled(storage, farm_config, cameo_row):
    from cameofarm.cluster.jobs import list_jobs

    german = _submit(storage, farm_config, cameo_row, script="Guten Morgen, wie geht es dir?")
    assert german.language == "de"  # detected: spoken by espeak-ng's German voice
    kana = _submit(storage, farm_config, cameo_row, script="こんにちは、みなさん。")
    assert kana.language == "ja"
    # kanji: espeak-ng's Japanese voice would say "Chinese letter" for each one
    with pytest.raises(JobError, match=r"cannot read 今日は安全研修です.*spell the characters"):
        _submit(storage, farm_config, cameo_row, script="今日は安全研修です。")
    with pytest.raises(JobError, match=r"in Klingon \(tlh, declared\).*speaks: .*de \(German\)"):
        _submit(storage, farm_config, cameo_row, script="Hello.", language="tlh")
    assert len(list_jobs(storage.db)) == 2


def test_burned_captions_are_refused_for_characters_their_font_lacks(
    storage, farm_config, cameo_row
):
    from cameofarm.cluster.jobs import IdempotencyConflict, list_jobs

    german = _submit(
        storage, farm_config, cameo_row, script="Grüß Gott, Straße!", captions="burned"
    )
    assert german.captions == "burned" and german.to_json()["captions"] == "burned"
    assert _submit(storage, farm_config, cameo_row).captions == "sidecar"  # the default
    with pytest.raises(JobError, match=r"burned-in captions cannot show こ ん に ち は"):
        _submit(storage, farm_config, cameo_row, script="こんにちは、みなさん。", captions="burned")
    with pytest.raises(JobError, match="captions must be one of sidecar, burned"):
        _submit(storage, farm_config, cameo_row, captions="subtitles")
    # Burned captions are part of what was asked: the same token cannot ask for both.
    _submit(storage, farm_config, cameo_row, client_token="t-1")
    with pytest.raises(IdempotencyConflict):
        _submit(storage, farm_config, cameo_row, client_token="t-1", captions="burned")
    assert len(list_jobs(storage.db)) == 3


def test_a_voice_that_speaks_english_only_refuses_german_at_submit(storage, farm_config, cameo_row):
    from cameofarm.configs import StageName

    pools = dict(farm_config.pools)
    pools[StageName.VOICE] = pools[StageName.VOICE].model_copy(update={"backend": "nemo"})
    nemo = farm_config.model_copy(update={"pools": pools})
    with pytest.raises(
        JobError, match=r"German \(de, detected\); the farm's nemo voice speaks: en"
    ):
        _submit(storage, nemo, cameo_row, script="Guten Morgen, wie geht es dir?")
