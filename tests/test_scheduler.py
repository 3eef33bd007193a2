"""The scheduler's loop on a real database with the render side replaced: what it dispatches."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest
from cameofarm.cluster.jobs import JobStatus, get_job, read_queues, submit_job
from cameofarm.storage.db import CameoRow, JobRow

pytestmark = pytest.mark.databases


class _RecordingExecutor:
    """Stands in for the render threads: remembers what was started, runs nothing."""

    def __init__(self):
        self.started: list[str] = []

    def submit(self, _fn, job_id):
        self.started.append(job_id)
        return Future()

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _queue_plus(storage, cameo_id, n, customers=40):
    """n queued Plus jobs of 40 customers, straight into the table (the cameo is opened to
    everyone so they pass the consent check at dispatch)."""
    now = time.time()
    with storage.db.session() as s:
        s.get(CameoRow, cameo_id).permission = "everyone"
        s.add_all(
            JobRow(
                id=f"job_plus{i:07d}",
                tier="plus",
                status="QUEUED",
                customer=f"c{i % customers}",
                priority=0,
                cameo_ids=[cameo_id],
                script="Hello.",
                submitted_at=now - n + i,
                attempts=0,
                progress=0.0,
                stage="",
            )
            for i in range(n)
        )


def _scheduler(farm_config, storage):
    from cameofarm.cluster.scheduler import Scheduler

    return Scheduler(farm_config, pools=None, storage=storage, executor=_RecordingExecutor())


def test_a_pro_job_behind_5000_queued_plus_jobs_starts_at_once(farm_config, storage, cameo_row):
    _queue_plus(storage, cameo_row.id, 5000)
    pro = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hi.",
        tier="pro",
        customer="tester",
    )
    sched = _scheduler(farm_config, storage)

    started = sched.tick()

    assert pro.id in started
    assert get_job(storage.db, pro.id).status is JobStatus.RUNNING
    assert sched.executor.started == started
    # Plus filled its own slots; the rest of its queue waits for them.
    plus = [j for j in started if j.startswith("job_plus")]
    assert len(plus) == farm_config.tiers["plus"].max_running
    assert "limit" in sched.last_output.waiting["plus"]
    assert read_queues(storage.db, 0).depth["plus"] == 5000 - len(plus)


@pytest.mark.parametrize("compound_limit", [400, 0], ids=["limit-scans", "window"])
def test_queue_heads_are_read_as_ordered_lines_and_decide_as_the_whole_queue_would(
    storage, monkeypatch, compound_limit
):
    import random

    from cameofarm.cluster.jobs import queries
    from cameofarm.cluster.policy import QueuedJob, SchedulerInput, TierLimits, schedule

    monkeypatch.setattr(queries, "_COMPOUND_LIMIT", compound_limit)
    rng = random.Random(3)
    jobs = [
        QueuedJob(
            f"job_{i:05d}",
            rng.choice(["plus", "pro"]),
            float(rng.randint(0, 50)),  # ties: the id decides
            rng.choice([0, 0, 1, 5]),
            f"c{rng.randint(0, 30)}",
        )
        for i in range(1500)
    ]
    with storage.db.session() as s:
        s.add_all(
            JobRow(
                id=j.job_id,
                tier=j.tier,
                status="QUEUED",
                customer=j.customer,
                priority=j.priority,
                cameo_ids=["cam_x"],
                script="Hello.",
                submitted_at=j.submitted_at,
                attempts=0,
                progress=0.0,
                stage="",
            )
            for j in jobs
        )
    heads = read_queues(storage.db, 7).heads
    for (tier, customer), line in heads.lines.items():
        own = sorted(
            (j for j in jobs if (j.tier, j.customer) == (tier, customer)),
            key=lambda j: (-j.priority, j.submitted_at, j.job_id),
        )
        assert [j.job_id for j in line] == [j.job_id for j in own[:7]]
    assert {k for k in heads.lines} == {(j.tier, j.customer) for j in jobs}
    tiers = {"plus": TierLimits(12, 0.6), "pro": TierLimits(8, 0.4, priority=1)}
    indexed = schedule(SchedulerInput(heads, (), tiers, 7))
    assert indexed.start == schedule(SchedulerInput(tuple(jobs), (), tiers, 7)).start
    assert [j.job_id for j in indexed.jobs] == list(indexed.start) and len(indexed.start) == 7


def test_a_pro_job_starts_as_soon_as_a_pro_slot_frees(farm_config, storage, cameo_row):
    from cameofarm.cluster.jobs import set_job_status

    _queue_plus(storage, cameo_row.id, 5000)
    first, second = (
        submit_job(
            storage.db,
            farm_config,
            cameo_ids=[cameo_row.id],
            script=f"Take {i}.",
            tier="pro",
            customer="tester",
        )
        for i in range(2)
    )
    sched = _scheduler(farm_config, storage)
    started = sched.tick()
    assert first.id in started and second.id not in started  # pro's one slot is taken

    assert sched.tick() == []  # nothing frees, nothing starts
    set_job_status(storage.db, first.id, JobStatus.SUCCEEDED, output_key="outputs/x.mp4")
    assert sched.tick() == [second.id]


def test_outputs_of_jobs_that_ended_unpublished_are_swept(farm_config, storage, cameo_row):
    """A crash between writing a job's output and marking it published leaves an object with
    no published job; the scheduler's housekeeping removes it and nothing published."""
    from cameofarm.cluster.jobs import dispatch_job, end_failed_attempt, finish_published
    from cameofarm.pipelines.render import output_key

    jobs = [
        submit_job(
            storage.db,
            farm_config,
            cameo_ids=[cameo_row.id],
            script="Hi.",
            tier="plus",
            customer="tester",
        )
        for _ in range(2)
    ]
    for job in jobs:
        dispatch_job(storage.db, farm_config, job.id)
        storage.objects.put_bytes(output_key(job.id), b"video", "video/mp4")
    failed, published = jobs
    end_failed_attempt(storage.db, failed.id, "node lost before publish", False, 1)
    finish_published(storage.db, farm_config, published.id, output_key(published.id))

    from cameofarm.actors.pools import LocalStagePools

    sched = _scheduler(farm_config, storage)
    sched.pools = LocalStagePools({})
    swept = sched.chores()["swept"]

    assert swept == 1
    assert not storage.objects.exists(output_key(failed.id))
    assert storage.objects.exists(output_key(published.id))


def test_constructing_does_no_io_and_recovery_runs_once(farm_config, storage, cameo_row):
    """A scheduler is built from what it is given (no storage touched); its first start
    re-queues what a crashed predecessor left RUNNING, and never again (its own live work)."""
    from cameofarm.cluster.jobs import dispatch_job
    from cameofarm.cluster.scheduler import Scheduler

    class NoStorage:
        def __getattr__(self, name):
            raise AssertionError(f"the constructor touched storage.{name}")

    Scheduler(farm_config, pools=None, storage=NoStorage(), executor=_RecordingExecutor())

    job = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hi.",
        tier="plus",
        customer="tester",
    )
    dispatch_job(storage.db, farm_config, job.id)  # a predecessor was running it, then died
    sched = _scheduler(farm_config, storage)
    assert sched.recover() == [job.id]
    assert get_job(storage.db, job.id).status is JobStatus.QUEUED
    assert sched.tick() == [job.id]  # this scheduler runs it now
    assert sched.recover() == [job.id]  # the same answer; nothing re-queued a second time
    assert get_job(storage.db, job.id).status is JobStatus.RUNNING
