"""Chunks stream through the frame stages: in order, at most `window` at once, stopped by
the first failure or a cancellation."""

from __future__ import annotations

import threading

import pytest
from cameofarm.actors.pools import StageCallError
from cameofarm.configs import StageName
from cameofarm.monitoring.timing import CallTiming
from cameofarm.pipelines.streaming import (
    FRAMES,
    Step,
    StreamCancelled,
    StreamProgress,
    stream_chunks,
)


class _Pools:
    """Stage pools whose calls append their stage to the frames they are given, counting how
    many chunks are in flight; `fail_at` makes one (stage, chunk) call fail."""

    def __init__(self, fail_at=None, together=None, hold=None, lose=()):
        self.lock = threading.Lock()
        self.together = together  # a barrier the first chunks' face swaps must all reach
        self.calls: list[tuple[StageName, int]] = []
        self.flying: set[int] = set()
        self.most_flying = 0
        self.fail_at = fail_at
        self.hold = hold  # an Event the other chunks' calls wait for (the stream's stop)
        self.lose = set(lose)  # (stage, chunk) calls whose input is lost, once each
        self.near: list[tuple[StageName, int, str | None]] = []

    def map(self, stage, method, calls, on_done=None, priority=(), near=None):
        (args,) = calls
        self.near.append((stage, args[1], near))
        frames = args[0] if stage is not StageName.BASE_VIDEO else ()
        chunk = args[1]
        with self.lock:
            self.calls.append((stage, chunk))
            self.flying.add(chunk)
            self.most_flying = max(self.most_flying, len(self.flying))
        if self.together is not None and stage is StageName.FACE_SWAP and chunk < 3:
            self.together.wait(timeout=60)  # three chunks in flight at once, or it breaks
        if (stage, chunk) == self.fail_at:
            raise StageCallError(stage, "ValueError: a broken chunk", False)
        if self.hold is not None and chunk != self.fail_at[1]:
            assert self.hold.wait(timeout=60)
        if (stage, chunk) in self.lose:
            self.lose.discard((stage, chunk))
            raise StageCallError(stage, "its input was lost with its node", True, lost_input=True)
        if stage is StageName.COMPOSITE:
            with self.lock:
                self.flying.discard(chunk)
        return [(*frames, stage.value)], [CallTiming(f"{stage.value}-0", "", 1.0, 2.0, 25)]


def _chains(n):
    return [
        [
            Step(StageName.BASE_VIDEO, "base_video", (None, k)),
            Step(StageName.FACE_SWAP, "face_swap", (FRAMES, k)),
            Step(StageName.LIP_SYNC, "lip_sync", (FRAMES, k)),
            Step(StageName.COMPOSITE, "encode", (FRAMES, k)),
        ]
        for k in range(n)
    ]


def _progress(seen):
    totals = {s: 9 for s in (StageName.BASE_VIDEO, StageName.FACE_SWAP)}
    totals.update({StageName.LIP_SYNC: 9, StageName.COMPOSITE: 9})
    return StreamProgress(totals, lambda stage, done, total: seen.append((stage, done)))


def test_chunks_come_out_in_order_with_at_most_window_in_flight():
    pools, seen = _Pools(together=threading.Barrier(3)), []
    out = stream_chunks(pools, _chains(9), 3, lambda: True, _progress(seen))
    stages = ["base_video", "face_swap", "lip_sync", "composite"]
    assert out.outputs == [tuple(stages)] * 9  # each chunk went through its chain in order
    assert pools.most_flying == 3  # the window: three met at the barrier, never a fourth
    for stage in out.calls:  # every call timed, with its chunk and when it was asked for
        assert sorted(t.chunk for t in out.calls[stage]) == list(range(9))
        assert all(t.submitted_at >= out.started_at for t in out.calls[stage])
    done = [d for s, d in seen if s is StageName.LIP_SYNC]
    assert done == list(range(10))  # from 0 to every call, one at a time


def test_the_first_failure_stops_the_other_chunks_and_is_raised():
    # The other chunks' calls answer only once the stream is stopped: nothing else can run
    # ahead of the failure, however the threads are scheduled.
    stop = threading.Event()
    pools = _Pools(fail_at=(StageName.FACE_SWAP, 2), hold=stop)
    with pytest.raises(StageCallError, match="a broken chunk"):
        stream_chunks(pools, _chains(40), 4, lambda: True, _progress([]), stop=stop)
    assert stop.is_set()
    started = {k for _, k in pools.calls}
    assert 2 in started and started <= {0, 1, 2, 3}  # chunks past the window never started
    # Each held chunk made at most the one call it was held in.
    assert all(sum(1 for _, k in pools.calls if k == c) <= 1 for c in started - {2})


def test_a_chunk_whose_input_was_lost_is_made_again_from_its_first_step():
    seen: list = []
    pools = _Pools(lose=[(StageName.LIP_SYNC, 1), (StageName.COMPOSITE, 2)])
    out = stream_chunks(pools, _chains(3), 2, lambda: True, _progress(seen))
    stages = ["base_video", "face_swap", "lip_sync", "composite"]
    assert out.outputs == [tuple(stages)] * 3
    made = [k for stage, k in pools.calls if stage is StageName.BASE_VIDEO]
    assert sorted(made) == [0, 1, 1, 2, 2]  # chunks 1 and 2 were made again
    assert [d for s, d in seen if s is StageName.COMPOSITE][-1] == 3  # counted once each
    again = [(t.chunk, r) for t in out.calls[StageName.BASE_VIDEO] for r in t.retried]
    assert sorted(k for k, _ in again) == [1, 2]  # the job's history says which and why
    assert all("lost with its node; the chunk was made again" in r for _, r in again)


def test_a_chunk_that_keeps_losing_its_input_fails_the_stream():
    from cameofarm.pipelines.streaming import CHUNK_REMAKES

    pools = _Pools(lose=[(StageName.LIP_SYNC, 0)])
    pools.lose = _Always({(StageName.LIP_SYNC, 0)})
    with pytest.raises(StageCallError, match="lost with its node") as caught:
        stream_chunks(pools, _chains(1), 1, lambda: True, _progress([]))
    assert caught.value.retryable  # the job is queued again
    made = [k for stage, k in pools.calls if stage is StageName.BASE_VIDEO]
    assert len(made) == 1 + CHUNK_REMAKES


class _Always(set):
    def discard(self, item):  # never forgets: every try loses its input
        pass


def test_a_cancelled_job_stops_before_the_next_call():
    asked = {"n": 0}

    def still_wanted():
        asked["n"] += 1
        return asked["n"] <= 5

    pools = _Pools()
    with pytest.raises(StreamCancelled):
        stream_chunks(pools, _chains(20), 2, still_wanted, _progress([]))
    assert len(pools.calls) == 5  # no call after the answer changed


def _until(condition, timeout=60.0):
    """Wait until `condition()` holds (polling a condition, not sleeping a fixed time)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_replica_serves_the_waiting_call_of_lowest_priority_next():
    from cameofarm.actors.stage import PriorityGate

    gate, order = PriorityGate(), []
    holding, release = threading.Event(), threading.Event()

    def hold():
        with gate.turn((20.0, 1.0, 0)):  # a Pro chunk at work
            holding.set()
            release.wait(timeout=60)
            order.append("pro chunk 0")

    def call(name, priority):
        with gate.turn(priority):
            order.append(name)

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(timeout=60)
    waiting = [
        threading.Thread(target=call, args=("pro chunk 1", (20.0, 1.0, 1))),
        threading.Thread(target=call, args=("pro chunk 2", (20.0, 1.0, 2))),
    ]
    for t in waiting:
        t.start()
    _until(lambda: gate.waiting() == 2)
    plus = threading.Thread(target=call, args=("plus chunk 0", (5.0, 2.0, 0)))
    plus.start()  # asked last, for a later job, but of the tier with the shortest videos
    _until(lambda: gate.waiting() == 3)
    release.set()
    for t in (first, *waiting, plus):
        t.join(timeout=60)
    assert order == ["pro chunk 0", "plus chunk 0", "pro chunk 1", "pro chunk 2"]


def test_each_step_asks_for_a_replica_near_the_one_that_made_its_frames():
    pools = _Pools()
    stream_chunks(pools, _chains(2), 2, lambda: True, _progress([]))
    nearby = {(stage, chunk): near for stage, chunk, near in pools.near}
    for k in range(2):
        assert nearby[(StageName.BASE_VIDEO, k)] is None
        assert nearby[(StageName.FACE_SWAP, k)] == "base_video-0"
        assert nearby[(StageName.LIP_SYNC, k)] == "face_swap-0"
        assert nearby[(StageName.COMPOSITE, k)] == "lip_sync-0"


def test_a_replica_on_the_frames_node_is_chosen_unless_it_is_busier():
    from cameofarm.actors.pools import RayStagePools

    pools = RayStagePools({StageName.LIP_SYNC: {"l0": "A", "l1": "B", "l2": "C"}})
    pools._nodes = {"l0": "10.0.0.1", "l1": "10.0.0.2", "l2": "10.0.0.2", "f0": "10.0.0.2"}
    picks = {pools._pick(StageName.LIP_SYNC, frozenset(), near="f0")[0] for _ in range(6)}
    assert picks == {"l1", "l2"}  # round robin among the two on f0's node
    pools._in_flight.update({"l1": 2, "l2": 2})  # both a call busier than l0 and more
    assert pools._pick(StageName.LIP_SYNC, frozenset(), near="f0")[0] in {"l0", "l1", "l2"}
    assert {pools._pick(StageName.LIP_SYNC, frozenset(), near="f0")[0] for _ in range(6)} == {
        "l0",
        "l1",
        "l2",
    }  # the frames travel: every replica takes calls again
    pools._in_flight.update({"l1": -1})  # l1: one call, one over l0's none
    assert pools._pick(StageName.LIP_SYNC, frozenset(), near="f0")[0] == "l1"
    assert pools._pick(StageName.LIP_SYNC, frozenset({"l1"}), near="f0")[0] != "l1"
    assert pools._pick(StageName.LIP_SYNC, frozenset(), near="unknown")[0] in {"l0", "l1", "l2"}
