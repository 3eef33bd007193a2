"""`cameofarm bench --report DIR`: the benchmark's figures as HTML with SVG plots and JSON."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from cameofarm.monitoring.bench_report import replica_use, write_report


def _call(replica, start, finish, submitted=None):
    return SimpleNamespace(
        stage=replica.split("-")[0],
        replica=replica,
        submitted_at=start if submitted is None else submitted,
        started_at=start,
        finished_at=finish,
    )


def test_replica_busy_time_counts_overlaps_once_and_finds_the_longest_idle_gap():
    calls = [
        _call("voice-0", 0.0, 2.0),
        _call("voice-0", 1.0, 3.0),  # overlaps the first: busy 0-3
        _call("voice-0", 7.0, 8.0),  # after a 4 s gap
        _call("lip_sync-0", 2.0, 10.0, submitted=1.0),
    ]
    use = {u.replica: u for u in replica_use(calls, 0.0, 10.0)}
    assert use["voice-0"].calls == 3 and use["voice-0"].busy_seconds == pytest.approx(4.0)
    assert use["voice-0"].busy_ratio == pytest.approx(0.4)
    assert use["voice-0"].longest_idle == pytest.approx(4.0)
    assert (
        use["lip_sync-0"].busy_ratio == pytest.approx(0.8) and use["lip_sync-0"].stage == "lip_sync"
    )


def _row(stage, chunk, submitted, start, finish, at=100.0):
    return SimpleNamespace(
        stage=stage,
        chunk=chunk,
        submitted_at=at + submitted,
        started_at=at + start,
        finished_at=at + finish,
        seconds=finish - start,
        frames=25,
    )


def test_a_streamed_jobs_critical_path_stage_time_and_overlap():
    from cameofarm.monitoring.bench import critical_path, report_of

    # Voice 0-1; a prompt scene generated 1-3 (chunk -1); two chunks streaming through the
    # four frame stages, chunk 1 a stage behind chunk 0 and its face swap waiting 1 s for the
    # replica; then the assembly (chunk 2, after both chunks) 11-12.
    rows = [
        _row("voice", 0, 0.0, 0.0, 1.0),
        _row("base_video", -1, 1.0, 1.0, 3.0),
        _row("base_video", 0, 3.0, 3.0, 4.0),
        _row("base_video", 1, 3.0, 4.0, 5.0),
        _row("face_swap", 0, 4.0, 4.0, 6.0),
        _row("face_swap", 1, 5.0, 6.0, 8.0),
        _row("lip_sync", 0, 6.0, 6.0, 7.0),
        _row("lip_sync", 1, 8.0, 8.0, 9.0),
        _row("composite", 0, 7.0, 7.0, 8.0),
        _row("composite", 1, 9.0, 9.0, 10.0),
        _row("composite", 2, 10.5, 11.0, 12.0),
    ]
    # 1 (voice) + 2 (scene) + 5 (a chunk: 1 + 2 + 1 + 1) + 1 (assembly)
    assert critical_path(rows) == pytest.approx(9.0)
    job = SimpleNamespace(id="job_a", tier="pro", status="SUCCEEDED", started_at=100.0)
    job.submitted_at = 97.5  # queued 2.5 s before it was dispatched
    job.finished_at = 113.0  # 1 s of publishing after the assembly
    report = report_of({"job_a": job}, {"job_a": rows})
    (stats,) = report.jobs
    assert stats.run == 13.0 and stats.critical_path == pytest.approx(9.0)
    assert stats.first_call == pytest.approx(2.5)  # submitted → its voice call started
    assert stats.queued == pytest.approx(2.5)  # submitted → dispatched (the voice at once)
    assert stats.stage_time == pytest.approx(12.0)  # 0-12, no gap between the stages
    assert stats.overhead == pytest.approx(13.0 / 12.0)
    # walls: voice 1, base video 4 (1-5), face swap 4, lip sync 3, composite 5 (7-12)
    assert stats.stage_walls_sum == pytest.approx(17.0)
    assert stats.streaming == pytest.approx(13.0 / 17.0)


def test_the_bench_report_has_plots_and_the_same_figures_as_json(
    farm_config, storage, cameo, pools, tmp_path
):
    from cameofarm.cluster.jobs import submit_job
    from cameofarm.pipelines.render import RenderJob

    from tests.conftest import render_published

    ids = []
    for script in ("Hello from the first job.", "And hello from the second one."):
        view = submit_job(
            storage.db,
            farm_config,
            cameo_ids=[cameo.id],
            script=script,
            tier="plus",
            customer="tester",
        )
        job = RenderJob(view.id, "plus", (cameo.id,), view.script)
        render_published(farm_config, storage, pools, job)
        ids.append(view.id)
    index = write_report(storage.db, ids, tmp_path / "report")
    page = index.read_text()
    for plot in ("stage_times.svg", "timeline.svg", "throughput.svg"):
        assert f'src="{plot}"' in page
        assert (tmp_path / "report" / plot).read_text().lstrip().startswith("<?xml")
    figures = json.loads((tmp_path / "report" / "report.json").read_text())
    assert figures["jobs"] == 2 and figures["failed"] == []
    assert {s["stage"] for s in figures["stages"]} == {
        "voice",
        "base_video",
        "face_swap",
        "lip_sync",
        "composite",
    }
    assert figures["tiers"][0]["jobs"] == 2 and figures["tiers"][0]["overhead_mean"] > 0
    for run in figures["job_runs"]:  # with one replica per stage, chunks queue for it
        assert 0 < run["critical_path"] <= run["stage_time"] <= run["run"]
        assert run["stage_walls_sum"] >= run["stage_time"]
    for replica in figures["replicas"]:  # the in-process pools: one replica per stage
        assert replica["replica"] == f"{replica['stage']}-local"
        assert 0 < replica["busy_ratio"] <= 1 and replica["calls"] >= 2
    assert "voice-local" in page and "2 jobs over" in page
    with pytest.raises(ValueError, match="nothing to report"):
        write_report(storage.db, ["job_unknown"], tmp_path / "empty")


def test_bench_refuses_a_pro_script_the_tier_would_refuse(
    farm_config, storage, cameo_row, monkeypatch
):
    """`bench --pro-script` with more than the Pro tier can say fails before any job is queued,
    saying why."""
    from cameofarm.service import demo

    monkeypatch.setattr("cameofarm.cluster.bootstrap.farm_status", lambda config: {})
    monkeypatch.setattr(demo, "_spilled_bytes", lambda: 0)
    long = "word " * 400
    with pytest.raises(demo.DemoError, match="the Pro script was refused"):
        demo.run_bench(
            farm_config, storage, 1, 1, cameo_row.id, echo=lambda _: None, pro_script=long
        )
    from cameofarm.cluster.jobs import list_jobs

    assert list_jobs(storage.db) == []
