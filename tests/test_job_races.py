"""Every accepted job ends exactly once: a cancel, a revocation or a publish never loses to
another writer that merely touched the job (dispatch, progress) in between."""

from __future__ import annotations

import threading

import pytest
from cameofarm.cluster.jobs import (
    JobError,
    JobStatus,
    cancel_job,
    dispatch_job,
    end_failed_attempt,
    finish_published,
    get_job,
    record_progress,
    set_job_status,
    submit_job,
)
from cameofarm.storage.db import JobEventRow, JobRow
from sqlalchemy import event, select

pytestmark = pytest.mark.databases


def _submit(storage, farm_config, cameo_row, script="Hello there."):
    return submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script=script,
        tier="plus",
        customer="tester",
    )


def _version(storage, job_id):
    with storage.db.session() as s:
        return s.get(JobRow, job_id).version


def _interleave_once(storage, write):
    """Run `write` (another writer) the first time any session of this farm flushes: right
    between a caller's read and its write, which is where the race used to be lost."""
    fired = []

    def before_flush(session, _ctx, _instances):
        if not fired:
            fired.append(True)
            write()

    event.listen(storage.db._sessions, "before_flush", before_flush)
    return fired


def test_progress_does_not_bump_the_version_that_guards_status(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    dispatch_job(storage.db, farm_config, job.id)
    before = _version(storage, job.id)
    for i in range(5):
        record_progress(storage.db, job.id, "face_swap", i / 5)
    assert _version(storage, job.id) == before
    view = get_job(storage.db, job.id)
    assert (view.stage, view.progress) == ("face_swap", 0.8)


def test_progress_of_a_job_that_is_not_running_changes_nothing(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    record_progress(storage.db, job.id, "voice", 0.5)
    view = get_job(storage.db, job.id)
    assert (view.status, view.stage, view.progress) == (JobStatus.QUEUED, "", 0.0)


def test_cancel_that_loses_to_a_dispatch_re_reads_and_cancels(storage, farm_config, cameo_row):
    if not storage.db.url.startswith("sqlite"):
        pytest.skip("PostgreSQL row locks (FOR UPDATE) make this interleaving impossible")
    job = _submit(storage, farm_config, cameo_row)
    fired = _interleave_once(storage, lambda: dispatch_job(storage.db, farm_config, job.id))

    view = cancel_job(storage.db, job.id)

    assert fired and view.status is JobStatus.CANCELLED
    with storage.db.session() as s:
        moves = [
            (e.from_status, e.to_status)
            for e in s.scalars(
                select(JobEventRow).where(JobEventRow.job_id == job.id).order_by(JobEventRow.id)
            )
        ]
    # The dispatch really happened in between, and the cancel was decided again after it.
    assert moves == [(None, "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "CANCELLED")]


def test_cancel_that_loses_to_a_success_says_so(storage, farm_config, cameo_row):
    if not storage.db.url.startswith("sqlite"):
        pytest.skip("PostgreSQL row locks (FOR UPDATE) make this interleaving impossible")
    job = _submit(storage, farm_config, cameo_row)
    dispatch_job(storage.db, farm_config, job.id)
    _interleave_once(
        storage,
        lambda: finish_published(storage.db, farm_config, job.id, f"outputs/{job.id}.mp4"),
    )
    # The decision changed (the job already succeeded): that is a real conflict.
    with pytest.raises(JobError, match="already SUCCEEDED") as info:
        cancel_job(storage.db, job.id)
    assert info.value.kind == "conflict"
    assert get_job(storage.db, job.id).status is JobStatus.SUCCEEDED


def test_cancel_races_dispatch_and_progress_without_refusals(storage, farm_config, cameo_row):
    """The scheduler's side dispatches and writes progress in a loop while the user cancels
    every job: none is refused, every one ends CANCELLED exactly once."""
    jobs = [_submit(storage, farm_config, cameo_row, f"Take {i}.").id for i in range(30)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def scheduler_side():
        try:
            while not stop.is_set():
                for job_id in jobs:
                    dispatch_job(storage.db, farm_config, job_id)
                    record_progress(storage.db, job_id, "face_swap", 0.5)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=scheduler_side)
    worker.start()
    try:
        ended = [cancel_job(storage.db, job_id).status for job_id in jobs]
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert ended == [JobStatus.CANCELLED] * len(jobs)
    with storage.db.session() as s:
        cancels = s.scalars(
            select(JobEventRow.job_id).where(JobEventRow.to_status == "CANCELLED")
        ).all()
    assert sorted(cancels) == sorted(jobs)  # exactly one CANCELLED transition each


def test_a_failed_attempt_of_a_cancelled_job_leaves_it_cancelled(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    dispatch_job(storage.db, farm_config, job.id)
    cancel_job(storage.db, job.id)
    assert end_failed_attempt(storage.db, job.id, "replica died", True, 3) is None
    assert get_job(storage.db, job.id).status is JobStatus.CANCELLED


def test_a_failed_attempt_is_retried_until_attempts_run_out(storage, farm_config, cameo_row):
    job = _submit(storage, farm_config, cameo_row)
    outcomes = []
    for _ in range(2):
        dispatch_job(storage.db, farm_config, job.id)
        outcomes.append(end_failed_attempt(storage.db, job.id, "replica died", True, 2))
    assert outcomes == [JobStatus.QUEUED, JobStatus.FAILED]
    view = get_job(storage.db, job.id)
    assert view.status is JobStatus.FAILED and view.error == "replica died"


def test_consent_lapsing_at_publish_cancels_the_job_for_good(storage, farm_config, cameo_row):
    """The refusal at publish used to roll back its own cancellation, leaving the job RUNNING
    with no one working on it."""
    from cameofarm.cluster.jobs import JobChanged
    from cameofarm.storage.db import CameoRow

    job = _submit(storage, farm_config, cameo_row)
    dispatch_job(storage.db, farm_config, job.id)
    with storage.db.session() as s:
        s.get(CameoRow, cameo_row.id).status = "REVOKED"
    with pytest.raises(JobChanged, match="not published"):
        finish_published(storage.db, farm_config, job.id, f"outputs/{job.id}.mp4")
    view = get_job(storage.db, job.id)
    assert view.status is JobStatus.CANCELLED and "consent check at publish" in (view.error or "")
    assert view.output_key is None


def test_set_status_re_decides_on_a_conflict(storage, farm_config, cameo_row):
    if not storage.db.url.startswith("sqlite"):
        pytest.skip("PostgreSQL row locks (FOR UPDATE) make this interleaving impossible")
    job = _submit(storage, farm_config, cameo_row)
    dispatch_job(storage.db, farm_config, job.id)
    _interleave_once(storage, lambda: cancel_job(storage.db, job.id))
    # The scheduler wanted SUCCEEDED from a stale read; on the fresh read the job is
    # CANCELLED, and that move is refused rather than overwriting the cancel.
    with pytest.raises(JobError, match="cannot go from CANCELLED"):
        set_job_status(storage.db, job.id, JobStatus.SUCCEEDED, output_key="outputs/x.mp4")
    assert get_job(storage.db, job.id).status is JobStatus.CANCELLED


def test_revocation_cascade_cancels_queued_and_running_uses(storage, farm_config, cameo_row):
    """The owner un-approves a user while the scheduler works on that user's jobs: both the
    queued and the running one are cancelled in the same change, none is refused."""
    from cameofarm.cameos.accounts import create_user
    from cameofarm.service.farm_api import FarmAPI

    api = FarmAPI(farm_config, storage)
    owner, _ = create_user(storage.db, "test", "tester", "acme")
    ada, _ = create_user(storage.db, "test", "ada", "acme")
    api.set_permission(owner, cameo_row.id, "approved")
    api.approve(owner, cameo_row.id, "ada")
    running = api.submit(ada, [cameo_row.id], "First take.")["id"]
    queued = api.submit(ada, [cameo_row.id], "Second take.")["id"]
    own = api.submit(owner, [cameo_row.id], "The owner's own.")["id"]
    dispatch_job(storage.db, farm_config, running)
    record_progress(storage.db, running, "face_swap", 0.4)

    out = api.unapprove(owner, cameo_row.id, "ada")

    assert sorted(out["cancelled_jobs"]) == sorted([running, queued])
    for job_id in (running, queued):
        view = get_job(storage.db, job_id)
        assert view.status is JobStatus.CANCELLED and "consent withdrawn" in (view.error or "")
    assert get_job(storage.db, own).status is JobStatus.QUEUED  # the owner may still cast it
