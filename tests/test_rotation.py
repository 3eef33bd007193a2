"""Replica rotation (pure logic, fake clock) and the job history of chunks tried again."""

from __future__ import annotations

import pytest
from cameofarm.actors.rotation import ReplicaRotation, RotationPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rotation(**policy) -> tuple[ReplicaRotation, Clock]:
    clock = Clock()
    return ReplicaRotation(RotationPolicy(**policy), clock), clock


def test_round_robin_over_replicas_in_rotation():
    rot, _ = _rotation()
    picks = [rot.choose(["a", "b", "c"], turn, frozenset()) for turn in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_a_retry_avoids_the_replicas_it_failed_on():
    rot, _ = _rotation()
    assert {rot.choose(["a", "b"], turn, frozenset({"a"})) for turn in range(4)} == {"b"}
    # Failed on every replica: any one in rotation still takes it (the stage never stops).
    assert rot.choose(["a", "b"], 0, frozenset({"a", "b"})) in {"a", "b"}


def test_failures_in_a_row_drain_a_replica_then_it_comes_back_on_probation():
    rot, clock = _rotation(failures_to_drain=3, drain_seconds=300)
    assert rot.failed("a", "lost") is False
    rot.succeeded("a")  # a success resets the count: failures must come in a row
    assert rot.failed("a", "lost") is False and rot.failed("a", "lost") is False
    assert rot.failed("a", "replica lost (ActorDiedError)") is True
    assert not rot.in_rotation("a")
    assert {rot.choose(["a", "b"], t, frozenset()) for t in range(4)} == {"b"}
    report = rot.report("a")
    assert report["in_rotation"] is False and report["back_in_s"] == 300.0
    assert report["failures"] == 3 and report["total_failures"] == 4
    assert report["last_failure"] == "replica lost (ActorDiedError)"

    clock.now += 299
    assert not rot.in_rotation("a")
    clock.now += 1
    assert rot.in_rotation("a")  # back, on probation: one more failure drains it again
    assert rot.failed("a", "lost") is True
    assert rot.report("a")["back_in_s"] == 300.0


def test_with_every_replica_drained_the_one_back_soonest_takes_the_call():
    rot, clock = _rotation(failures_to_drain=1, drain_seconds=100)
    rot.failed("a", "x")
    clock.now += 50
    rot.failed("b", "x")
    assert rot.choose(["a", "b"], 0, frozenset()) == "a"


def test_a_stage_with_no_replicas_is_refused():
    rot, _ = _rotation()
    with pytest.raises(ValueError, match="no replicas"):
        rot.choose([], 0, frozenset())


def test_retried_chunks_are_written_to_the_job_history(storage, farm_config, cameo_row):
    from cameofarm.cluster.jobs import UnknownJobError, job_history, submit_job
    from cameofarm.monitoring.timing import CallTiming, StageRecorder

    job = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hello there.",
        tier="plus",
        customer="tester",
    )
    calls = [
        CallTiming("face_swap-0", "0", 10.0, 11.0, 25),
        CallTiming("face_swap-1", "1", 12.0, 13.0, 25, retried=("face_swap-0: replica lost",)),
    ]
    StageRecorder(storage.db).record(job.id, "plus", "face_swap", calls, 9.0, 13.0)
    history = job_history(storage.db, job.id, viewer="tester")
    assert history[0]["to"] == "QUEUED"
    assert history[-1] == {
        "at": 12.0,
        "from": "RUNNING",
        "to": "RUNNING",
        "reason": "face_swap chunk 1 tried again on face_swap-1: face_swap-0: replica lost",
    }
    with pytest.raises(UnknownJobError):  # another user's job is not theirs to read
        job_history(storage.db, job.id, viewer="somebody-else")
