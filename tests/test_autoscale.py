"""The pool autoscaler's decisions (pure), its config checks, and a local farm whose face
swap pool grows under load and shrinks when idle."""

from __future__ import annotations

import pytest
from cameofarm.cluster.autoscale import Autoscaler, ScaleBounds


def _scaler(lowest=1, highest=3, after=10.0):
    return Autoscaler({"face_swap": ScaleBounds(lowest, highest)}, 0.75, 0.25, after)


def _health(busy, waiting=0, stage="face_swap"):
    """Reports of a pool's replicas: cumulative busy seconds each, calls waiting at the first."""
    return [
        {"stage": stage, "replica": f"r{i}", "busy_seconds": b, "waiting": waiting if i == 0 else 0}
        for i, b in enumerate(busy)
    ]


def test_a_busy_pool_with_calls_waiting_grows_by_one_up_to_its_bound():
    scaler = _scaler(highest=2)
    assert scaler.observe(_health([0.0]), now=0.0) == []  # the first look starts the window
    [d] = scaler.observe(_health([9.0], waiting=3), now=10.0)
    assert (d.replicas, d.target, d.busy, d.waiting) == (1, 2, 0.9, 3) and d.changes
    assert "busy 90% with 3 calls waiting" in d.reason
    [d] = scaler.observe(_health([19.0, 9.0], waiting=5), now=20.0)  # the new one: not in both
    assert not d.changes and "at max_replicas 2" in d.reason


def test_busy_without_a_queue_or_a_queue_without_busy_does_not_grow():
    scaler = _scaler()
    scaler.observe(_health([0.0, 0.0]), now=0.0)
    [d] = scaler.observe(_health([10.0, 10.0]), now=10.0)  # all busy, nothing waiting
    assert not d.changes
    [d] = scaler.observe(_health([12.0, 12.0], waiting=4), now=20.0)  # 20 % busy, 4 waiting
    assert not d.changes and d.busy == pytest.approx(0.2)


def test_an_idle_pool_shrinks_after_the_period_one_step_at_a_time_not_below_its_floor():
    scaler = _scaler(lowest=1, after=10.0)
    scaler.observe(_health([5.0, 5.0, 5.0]), now=0.0)
    [d] = scaler.observe(_health([5.0, 5.0, 5.0]), now=5.0)
    assert not d.changes  # idle 5 s of 10
    [d] = scaler.observe(_health([5.0, 5.0, 5.0]), now=10.0)
    assert (d.replicas, d.target) == (3, 2)
    [d] = scaler.observe(_health([5.0, 5.0]), now=15.0)
    assert not d.changes  # the next step waits a full period again
    [d] = scaler.observe(_health([5.0, 5.0]), now=20.0)
    assert d.target == 1
    scaler.observe(_health([5.0]), now=40.0)
    [d] = scaler.observe(_health([5.0]), now=60.0)
    assert not d.changes  # at min_replicas


def test_work_in_between_restarts_the_idle_period():
    scaler = _scaler(after=10.0)
    scaler.observe(_health([0.0, 0.0]), now=0.0)
    scaler.observe(_health([0.0, 0.0]), now=6.0)
    scaler.observe(_health([6.0, 6.0], waiting=0), now=12.0)  # fully busy: idle period over
    [d] = scaler.observe(_health([6.0, 6.0]), now=18.0)
    assert not d.changes  # idle since 12 s only


def test_a_restarted_replica_counts_its_new_busy_seconds_and_unreachable_ones_nothing():
    scaler = _scaler(highest=4)
    scaler.observe(_health([100.0, 0.0]), now=0.0)
    health = _health([8.0, 8.0], waiting=2)  # r0 restarted: its count began again
    health.append({"stage": "face_swap", "replica": "r2", "reachable": False})
    [d] = scaler.observe(health, now=10.0)
    assert d.busy == pytest.approx(0.8) and d.replicas == 3 and d.target == 4


def test_pools_of_fixed_size_are_not_looked_at():
    scaler = _scaler()
    assert scaler.observe(_health([0.0], stage="voice"), now=0.0) == []
    assert scaler.observe(_health([10.0], waiting=9, stage="voice"), now=10.0) == []


def test_bounds_and_thresholds_are_checked_with_the_config():
    from cameofarm.configs import load_config

    with pytest.raises(Exception, match="must lie between min_replicas"):
        load_config(environ={"CAMEOFARM__POOLS__FACE_SWAP__MAX_REPLICAS": "1"})
    with pytest.raises(Exception, match="must lie between min_replicas"):
        load_config(environ={"CAMEOFARM__POOLS__VOICE__MIN_REPLICAS": "2"})
    with pytest.raises(Exception, match=r"scale_down_busy \(0.8\) must be under scale_up_busy"):
        load_config(environ={"CAMEOFARM__SCHEDULER__SCALE_DOWN_BUSY": "0.8"})
    pool = load_config(environ={"CAMEOFARM__POOLS__FACE_SWAP__MAX_REPLICAS": "4"}).pools
    assert [(p.lowest, p.highest) for s, p in pool.items() if s.value == "face_swap"] == [(2, 4)]


@pytest.mark.integration
def test_the_local_farm_grows_a_busy_pool_and_shrinks_it_when_idle(farm_config, storage, cameo):
    from cameofarm.cluster.bootstrap import farm_down, farm_status, farm_up
    from cameofarm.cluster.jobs import JobStatus
    from cameofarm.configs import StageName
    from cameofarm.service.jobs_api import submit_render, wait_for_job

    from tests.hosts import wait_for

    pools = dict(farm_config.pools)
    pools[StageName.FACE_SWAP] = pools[StageName.FACE_SWAP].model_copy(
        update={"replicas": 1, "min_replicas": 1, "max_replicas": 2}
    )
    scheduler = farm_config.scheduler.model_copy(
        update={
            "autoscale_seconds": 1.0,
            "scale_up_busy": 0.5,
            "scale_down_busy": 0.2,
            "scale_down_after_seconds": 3.0,
        }
    )
    config = farm_config.model_copy(update={"pools": pools, "scheduler": scheduler})

    def face_swap() -> tuple[int, dict]:
        status = farm_status(config)
        count = sum(1 for p in status["pools"] if p["stage"] == "face_swap")
        return count, status["autoscale"]["face_swap"]

    try:
        farm_up(config, progress=lambda _: None)
        assert face_swap()[0] == 1
        jobs = [
            submit_render(config, storage, [cameo.id], script, "plus", "tester")
            for script in ("The first of two busy jobs.", "And the second of them, right behind.")
        ]
        wait_for("the face swap pool to grow", lambda: face_swap()[1]["grown"] >= 1, 600)
        for job in jobs:
            assert wait_for_job(storage, job.id, timeout=600).status is JobStatus.SUCCEEDED
        wait_for(
            "the idle face swap pool to shrink back to 1",
            lambda: face_swap()[0] == 1 and face_swap()[1]["shrunk"] >= 1,
            300,
        )
        state = face_swap()[1]
        assert (state["lowest"], state["highest"]) == (1, 2) and state["grown"] >= 1
        assert "busy" in state["last"]
        voice = [p for p in farm_status(config)["pools"] if p["stage"] == "voice"]
        assert len(voice) == 1  # a pool of fixed size is left alone
    finally:
        farm_down(config, progress=lambda _: None)
