"""`cameofarm simulate`: recorded costs, the simulated farm and its figures."""

from __future__ import annotations

import json

import pytest
from cameofarm.cluster.capacity import (
    PIPELINE,
    JobCost,
    plan_farm,
    recorded_costs,
    report_lines,
    simulate,
)
from cameofarm.storage.db import Database, JobRow, StageTimingRow, default_sqlite_url
from click.testing import CliRunner


def _cost(tier: str, seconds: float = 1.0, calls: int = 1, overhead: float = 0.0) -> JobCost:
    return JobCost(tier, tuple((s, (seconds,) * calls) for s in PIPELINE), overhead)


def _record(db: Database, job_id: str, tier: str, stages, status="SUCCEEDED", attempts=1):
    """A finished job and its stage calls, as a render records them: each stage's calls run
    side by side from `at`, the stages one after another, then 2 s of measuring."""
    at = 1000.0
    with db.session() as s:
        s.add(
            JobRow(
                id=job_id,
                tier=tier,
                status=status,
                customer="c",
                priority=0,
                cameo_ids=["cam_x"],
                script="Hi.",
                submitted_at=at - 5,
                started_at=at,
                attempts=attempts,
                progress=1.0,
                stage="",
            )
        )
        s.flush()
        for stage, calls in stages:
            for chunk, seconds in enumerate(calls):
                s.add(
                    StageTimingRow(
                        job_id=job_id,
                        attempt=1,
                        tier=tier,
                        stage=stage,
                        chunk=chunk,
                        replica=f"{stage}-0",
                        submitted_at=at,
                        started_at=at,
                        finished_at=at + seconds,
                        seconds=seconds,
                    )
                )
            at += max(calls)
        s.get(JobRow, job_id).finished_at = at + 2.0


def test_recorded_costs_are_first_attempt_successes_with_every_stage(tmp_path):
    db = Database(default_sqlite_url(tmp_path))
    whole = [(s, (1.0, 3.0)) for s in PIPELINE]
    _record(db, "job_ok", "plus", whole)
    _record(db, "job_pro", "pro", [(s, (2.0,)) for s in PIPELINE])
    _record(db, "job_failed", "plus", whole, status="FAILED")
    _record(db, "job_retried", "plus", whole, attempts=2)
    _record(db, "job_partial", "plus", whole[:3])
    costs = recorded_costs(db)
    assert {t: len(c) for t, c in costs.items()} == {"plus": 1, "pro": 1}
    plus = costs["plus"][0]
    assert plus.stages == tuple((s, (1.0, 3.0)) for s in PIPELINE)  # in pipeline order
    assert plus.overhead == pytest.approx(2.0)  # the slot held outside the stages


def test_a_light_load_waits_one_tick_and_every_job_is_accounted_for(farm_config):
    costs = {"plus": [_cost("plus")], "pro": [_cost("pro", seconds=4.0)]}
    rates = {"plus": 600.0, "pro": 60.0}
    plan = plan_farm(farm_config, costs, rates, gpus=20)
    result = simulate(plan, costs, rates, hours=2.0, seed=1)
    for name, tier in result.tiers.items():
        assert tier.arrived == pytest.approx(rates[name] * 2, rel=0.15)
        running_at_end = tier.started - tier.finished
        assert tier.arrived == tier.finished + running_at_end + tier.still_queued
        assert tier.wait(95) <= farm_config.scheduler.tick_seconds + 1e-9
    # GPU time is the calls' seconds times each replica's GPU share, over the GPUs' hours.
    share = {s: farm_config.pools[s].num_gpus for s in PIPELINE}
    expected = sum(
        t.started * (1.0 if name == "plus" else 4.0) * sum(share.values())
        for name, t in result.tiers.items()
    ) / (20 * 2 * 3600)
    assert result.gpu_busy() == pytest.approx(expected, rel=0.02)
    # The pools split the GPUs by the load each carries: here every stage carries the same.
    assert len(set(plan.replicas.values())) == 1 and plan.gpus_used <= 20
    assert len(result.timeline["t"]) == len(result.timeline["busy"]) > 100


def test_an_overloaded_farm_says_so_and_the_policy_still_serves_pro(farm_config):
    costs = {"plus": [_cost("plus", seconds=2.0, calls=4)], "pro": [_cost("pro", seconds=2.0)]}
    rates = {"plus": 20_000.0, "pro": 100.0}
    plan = plan_farm(farm_config, costs, rates, gpus=4)
    result = simulate(plan, costs, rates, hours=0.5, seed=2)
    plus, pro = result.tiers["plus"], result.tiers["pro"]
    assert plus.still_queued > plus.arrived // 2  # the Plus queue grows without bound
    assert plus.wait(95) > 600
    # Pro has its own capacity share: it is not stuck behind the Plus queue.
    assert pro.still_queued == 0 and pro.wait(95) < 60
    text = "\n".join(report_lines(result, rates, "hand-made"))
    assert "the queue of plus grew to the end: this farm cannot keep up" in text
    # With the running limits far higher, the GPUs are what binds.
    wide = plan_farm(farm_config, costs, rates, gpus=4, max_running_jobs=10_000)
    busy = simulate(wide, costs, rates, hours=0.5, seed=2)
    in_pools = wide.gpus_used / wide.gpus  # 3.375 of 4 GPUs: whole replicas only
    assert busy.gpu_busy() > 0.95 * in_pools
    assert "add GPUs" in "\n".join(report_lines(busy, rates, "x"))
    assert wide.tiers["plus"].max_running > plan.tiers["plus"].max_running


def test_replicas_serve_plus_calls_first_so_a_pro_backlog_keeps_the_gpus_busy(farm_config):
    """As at the farm's replicas, a freed replica takes the earliest-priority call: a Plus
    job's calls overtake a Pro backlog's, so Plus runs in about its own call time while Pro
    keeps every GPU busy."""
    costs = {"plus": [_cost("plus", seconds=1.0, calls=2)], "pro": [_cost("pro", seconds=4.0)]}
    rates = {"plus": 300.0, "pro": 20_000.0}
    plan = plan_farm(farm_config, costs, rates, gpus=4, max_running_jobs=10_000)
    result = simulate(plan, costs, rates, hours=0.5, seed=3)
    plus, pro = result.tiers["plus"], result.tiers["pro"]
    assert result.gpu_busy() > 0.95 * plan.gpus_used / plan.gpus  # the backlog fills them
    assert plus.finished > 100
    # Per stage: its own 1 s, after at most the 4 s Pro call at work on the replica.
    assert plus.run(95) <= len(PIPELINE) * (1.0 + 4.0) + 1e-6
    assert pro.run(50) > 10 * plus.run(50)  # Pro's calls wait behind each other and Plus
    assert "run p95" in report_lines(result, rates, "x")[3]


def test_a_farm_too_small_for_its_pools_is_refused(farm_config):
    from cameofarm.cluster.capacity import SimulationError

    costs = {"plus": [_cost("plus")]}
    with pytest.raises(SimulationError, match="cannot hold one replica of each stage pool"):
        plan_farm(farm_config, costs, {"plus": 10.0}, gpus=1)


def test_the_cli_needs_a_farm_with_recorded_jobs_and_writes_its_plot(tmp_path, monkeypatch):
    from cameofarm.service.cli import cli

    monkeypatch.chdir(tmp_path)
    env = {"CAMEOFARM__DATA_DIR": str(tmp_path / "farm")}
    args = ["simulate", "--gpus", "8", "--plus-rate", "300", "--pro-rate", "30", "--hours", "0.5"]
    none = CliRunner().invoke(cli, args, env=env)
    assert none.exit_code != 0 and "no farm at" in none.output
    assert not (tmp_path / "farm").exists()  # read-only: it created nothing
    db = Database(default_sqlite_url(tmp_path / "farm"))
    _record(db, "job_plus", "plus", [(s, (0.5, 0.5)) for s in PIPELINE])
    empty = CliRunner().invoke(cli, args, env=env)
    assert empty.exit_code != 0 and "recorded no pro job" in empty.output
    assert "cameofarm bench --plus 4 --pro 1" in empty.output
    _record(db, "job_pro", "pro", [(s, (2.0,)) for s in PIPELINE])
    db.dispose()
    out = CliRunner().invoke(cli, [*args, "--plot", "capacity.png"], env=env)
    assert out.exit_code == 0, out.output
    assert "simulated 0.5 h on 8 GPUs" in out.output and "GPU busy" in out.output
    assert out.output.count("s ") > 4 and "1 plus, 1 pro recorded jobs" in out.output
    assert (tmp_path / "capacity.png").read_bytes().startswith(b"\x89PNG")
    as_json = CliRunner().invoke(cli, [*args, "--json", "--plot", "c.png"], env=env)
    figures = json.loads(as_json.output)
    assert set(figures["tiers"]) == {"plus", "pro"} and 0 < figures["gpu_busy"] < 1
    assert figures["tiers"]["plus"]["jobs_per_hour"] > 0
