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
