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


def _reference(inp):
    """The policy written plainly over the whole queue: the heads-fed one must agree."""
    from collections import Counter

    by_tier = Counter(j.tier for j in inp.running)
    share = Counter(j.share for j in inp.running)
    cust = Counter(j.customer for j in inp.running)
    last = dict(inp.last_started)
    pending = {}
    for job in inp.queued:
        if job.tier in inp.tiers:
            pending.setdefault(job.tier, []).append(job)
    free, started = inp.max_running_jobs - len(inp.running), []
    while free > 0:
        eligible = [t for t, js in pending.items() if js and by_tier[t] < inp.tiers[t].max_running]
        if not eligible:
            break
        tier = min(
            eligible,
            key=lambda t: (by_tier[t] / inp.tiers[t].capacity_share, -inp.tiers[t].priority, t),
        )
        best = min(
            pending[tier],
            key=lambda j: (
                -j.priority,
                share[j.share],
                last.get(j.share, float("-inf")),
                cust[j.customer],
                j.submitted_at,
                j.job_id,
            ),
        )
        pending[tier].remove(best)
        started.append(best.job_id)
        by_tier[tier] += 1
        share[best.share] += 1
        cust[best.customer] += 1
        last[best.share] = float("inf")
        free -= 1
    return tuple(started)


def _heads(queued, n):
    out, seen = [], {}
    for job in sorted(queued, key=lambda j: (-j.priority, j.submitted_at, j.job_id)):
        key = (job.tier, job.customer)
        if seen.get(key, 0) < n:
            seen[key] = seen.get(key, 0) + 1
            out.append(job)
    return out


def test_heads_give_the_same_decision_as_the_whole_queue():
    import random

    from cameofarm.cluster.policy import heads_needed

    rng = random.Random(7)
    tiers = {
        "plus": TierLimits(max_running=4, capacity_share=0.6, priority=0),
        "pro": TierLimits(max_running=3, capacity_share=0.4, priority=1),
    }
    for trial in range(300):
        customers = [f"c{i}" for i in range(rng.randint(1, 6))]
        org = {c: rng.choice(["", "o1", "o2"]) for c in customers}  # some share an org
        queued = []
        for i in range(rng.randint(0, 60)):
            who = rng.choice(customers)
            tier, at, prio = rng.choice(["plus", "pro"]), rng.random() * 100, rng.choice([0, 1, 5])
            queued.append(QueuedJob(f"j{trial}_{i}", tier, at, prio, who, org[who]))
        running = []
        for i in range(rng.randint(0, 4)):
            who = rng.choice(customers)
            running.append(RunningJob(f"r{i}", rng.choice(["plus", "pro"]), who, org[who]))
        last = {j.share: rng.random() * 100 for j in running if rng.random() < 0.7}
        max_running = rng.randint(1, 8)
        whole = SchedulerInput(tuple(queued), tuple(running), tiers, max_running, last)
        n = heads_needed(tiers, len(running), max_running)
        heads = SchedulerInput(tuple(_heads(queued, n)), tuple(running), tiers, max_running, last)
        assert schedule(heads).start == _reference(whole), trial


def test_a_pro_job_behind_5000_plus_jobs_gets_the_pro_slot():
    queued = [q(f"p{i}", "plus", i, cust=f"c{i % 40}") for i in range(5000)]
    queued.append(q("pro-last", "pro", 10_000, cust="late"))
    running = [RunningJob("r0", "plus", "c1"), RunningJob("r1", "plus", "c2")]  # plus is full
    out = run(queued, running=running, max_running=3)
    assert out.start == ("pro-last",)
    assert "tier at its limit" in out.waiting["plus"]


def test_an_organisations_batch_does_not_delay_another_organisations_job():
    """Org X's 1,000-row batch fills the farm; org Y's single Plus job, submitted after all of
    it, takes the next free slot (its two customers count as one share)."""
    tiers = {"plus": TierLimits(max_running=3, capacity_share=1.0)}
    batch = [QueuedJob(f"x{i}", "plus", float(i), 0, f"x-user{i % 2}", "x") for i in range(1000)]
    single = QueuedJob("y0", "plus", 5000.0, 0, "y-user", "y")
    running = [RunningJob(f"xr{i}", "plus", f"x-user{i % 2}", "x") for i in range(2)]
    # One slot frees (3 - 2 running): Y's job takes it, not X's oldest row.
    assert run([*batch, single], running, max_running=3, tiers=tiers).start == ("y0",)
    # With Y running and no other org waiting, X's rows take what frees next, in order.
    running.append(RunningJob("y0", "plus", "y-user", "y"))
    assert run(batch, running[1:], max_running=3, tiers=tiers).start == ("x0",)
    # One slot, and X's last batch job has just ended: nothing of X runs, yet Y (never served
    # lately) still goes first, because X was served more recently.
    inp = SchedulerInput((*batch, single), (), tiers, 1, {"x": 4999.0})
    assert schedule(inp).start == ("y0",)
    inp = SchedulerInput((*batch, single), (), tiers, 1, {"x": 4999.0, "y": 5001.0})
    assert schedule(inp).start == ("x0",)  # Y was served since: X's turn


def test_a_job_without_an_organisation_is_its_customers_own_share():
    running = [RunningJob("r", "plus", "a")]
    queued = [q("a1", "plus", 1, cust="a"), q("b1", "plus", 2, cust="b")]
    assert run(queued, running, max_running=2).start == ("b1",)


def test_a_job_starts_only_when_its_frames_fit_in_the_object_store():
    gib = 2**30
    tiers = {
        "plus": TierLimits(max_running=4, capacity_share=0.5, memory_bytes=gib // 2),
        "pro": TierLimits(max_running=4, capacity_share=0.5, priority=1, memory_bytes=gib),
    }
    queued = (
        QueuedJob("pro1", "pro", 1.0, customer="a"),
        QueuedJob("pro2", "pro", 2.0, customer="b"),
        QueuedJob("plus1", "plus", 3.0, customer="c"),
        QueuedJob("plus2", "plus", 4.0, customer="d"),
    )
    budget = 2 * gib
    out = schedule(SchedulerInput(queued, (), tiers, 8, memory_budget=budget))
    assert out.start == ("pro1", "plus1", "plus2")  # 2 GiB: one Pro, two Plus; pro2 waits
    assert out.waiting["pro"].startswith("object store full: running jobs hold up to 2048 MiB")
    # Nothing running: a job always starts, even one over the whole budget.
    tiny = schedule(SchedulerInput(queued[:1], (), tiers, 8, memory_budget=gib // 4))
    assert tiny.start == ("pro1",)
    # Running jobs' frames count: with a Pro job running, only a Plus one fits beside it.
    running = (RunningJob("r", "pro", "z"),)
    assert schedule(SchedulerInput(queued, running, tiers, 8, memory_budget=budget)).start == (
        "plus1",
        "plus2",
    )
    unlimited = schedule(SchedulerInput(queued, (), tiers, 8)).start  # no budget: no limit
    assert sorted(unlimited) == sorted(j.job_id for j in queued)
