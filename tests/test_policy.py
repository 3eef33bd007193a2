from __future__ import annotations

from cameofarm.cluster.policy import (
    QueuedJob,
    RunningJob,
    SchedulerInput,
    TierLimits,
    schedule,
)

TIERS = {
    "plus": TierLimits(max_running=2, capacity_share=0.5, priority=0),
    "pro": TierLimits(max_running=1, capacity_share=0.5, priority=1),
}


def q(jid, tier, t, prio=0, cust="a"):
    return QueuedJob(jid, tier, float(t), prio, cust)


def run(queued, running=(), max_running=3, tiers=TIERS):
    return schedule(SchedulerInput(tuple(queued), tuple(running), tiers, max_running))


def test_submission_order_within_a_tier():
    out = run([q("p2", "plus", 2), q("p1", "plus", 1)], max_running=1)
    assert out.start == ("p1",)


def test_priority_beats_submission_order():
    out = run([q("old", "plus", 1), q("urgent", "plus", 5, prio=10)], max_running=1)
    assert out.start == ("urgent",)


def test_tier_concurrency_limit_and_farm_limit():
    out = run([q(f"p{i}", "plus", i) for i in range(5)], max_running=10)
    assert out.start == ("p0", "p1")
    assert "tier at its limit" in out.waiting["plus"]
    out = run([q(f"p{i}", "plus", i) for i in range(5)], max_running=1)
    assert out.start == ("p0",)
    assert "farm at its limit" in out.waiting["plus"]


def test_capacity_shares_split_slots_between_tiers():
    queued = [q(f"p{i}", "plus", i) for i in range(4)] + [q("r0", "pro", 10)]
    out = run(queued, max_running=3)
    assert sorted(out.start) == ["p0", "p1", "r0"]
    # pro (higher tier priority) gets the first slot when both are at zero
    assert out.start[0] == "r0"


def test_running_jobs_count_against_limits():
    out = run(
        [q("p9", "plus", 9), q("r1", "pro", 1)], running=[RunningJob("r0", "pro")], max_running=3
    )
    assert out.start == ("p9",)
    assert "pro" in out.waiting


def test_per_customer_fairness_inside_a_tier():
    queued = [
        q("a1", "plus", 1, cust="a"),
        q("a2", "plus", 2, cust="a"),
        q("b1", "plus", 3, cust="b"),
    ]
    out = run(queued, running=[RunningJob("a0", "plus", "a")], max_running=2)
    assert out.start == ("b1",)


def test_unknown_tier_waits_with_reason_and_nothing_free_starts_nothing():
    out = run([q("x", "gold", 1)])
    assert out.start == () and "unknown tier" in out.waiting["gold"]
    out = run([q("p", "plus", 1)], running=[RunningJob(f"r{i}", "plus") for i in range(3)])
    assert out.start == ()
