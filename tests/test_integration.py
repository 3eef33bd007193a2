"""Starts a real local Ray farm (run inside a loopback-only network namespace)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def farm(farm_config, storage):
    from cameofarm.cluster.bootstrap import farm_down, farm_up

    try:  # a farm that fails to come up is stopped too
        farm_up(farm_config, progress=lambda _: None)
        yield farm_config
    finally:  # farm_down says "not running" itself when the farm never came up
        farm_down(farm_config, progress=lambda _: None)


def test_farm_renders_plus_job_and_survives_a_kill(farm, storage, cameo, tmp_path):
    import av
    import ray
    from cameofarm.cluster.bootstrap import farm_status, farm_up
    from cameofarm.cluster.jobs import JobStatus, get_job
    from cameofarm.cluster.ray_head import stop_head
    from cameofarm.models.media import probe_mp4
    from cameofarm.models.reference.compositor import watermark_mask
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.monitoring.bench import build_report
    from cameofarm.service.jobs_api import submit_render, wait_for_job

    status = farm_status(farm)
    stages = {p["stage"] for p in status["pools"]}
    assert stages == {"voice", "base_video", "face_swap", "lip_sync", "composite"}
    assert all(p["gpu_ids"] != "" for p in status["pools"])  # logical GPUs were assigned

    # 1. A short Plus render, checked end to end.
    job = submit_render(
        farm, storage, [cameo.id], "Hello there, nice to meet you.", "plus", "tester"
    )
    done = wait_for_job(storage, job.id, timeout=600)
    assert done.status is JobStatus.SUCCEEDED, done.error
    path = storage.objects.locate(done.output_key)
    rep = probe_mp4(path)
    assert (rep.width, rep.height) == (1280, 720)
    assert rep.duration <= 5.0 and rep.audio_codec == "aac" and rep.audio_seconds > 1.0
    with storage.db.session() as s:
        from cameofarm.storage.db import StageTimingRow

        frames = sum(
            r.frames for r in s.query(StageTimingRow).filter_by(job_id=job.id, stage="lip_sync")
        )
    assert rep.frames == frames
    root = (storage.keys_dir / "root.pem").read_bytes()
    c2pa = verify_mp4(Path(path).read_bytes(), root)
    assert c2pa.valid and c2pa.cameo_ids == (cameo.id,) and c2pa.tier == "plus"
    mask, _ = watermark_mask(1280, 720)
    with av.open(path) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame[mask > 128].mean() > 180
    report = build_report(storage.db, [job.id])
    assert {s.stage for s in report.stages} == stages
    assert report.tiers[0].overhead_mean > 0

    # 2. Kill the whole farm while a job runs; start it again; the job finishes.
    job2 = submit_render(farm, storage, [cameo.id], "This one survives a crash.", "plus", "tester")
    deadline = time.monotonic() + 300
    while get_job(storage.db, job2.id).status is not JobStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ray.shutdown()
    assert stop_head(farm, grace=0) > 0  # kill -9 every process of this farm's Ray node
    assert get_job(storage.db, job2.id).status is JobStatus.RUNNING  # nobody left to finish it
    status = farm_up(farm, progress=lambda _: None)
    assert job2.id in status["recovered"]
    done2 = wait_for_job(storage, job2.id, timeout=600)
    assert done2.status is JobStatus.SUCCEEDED, done2.error
    assert done2.attempts == 2
    assert verify_mp4(storage.objects.get_bytes(done2.output_key), root).valid


def test_up_applies_a_changed_pool_config(farm):
    """`up` again with the same config keeps every replica and the scheduler; with a changed
    pool it replaces the replicas whose settings changed, stops those the config dropped, and
    restarts the scheduler so that it uses the new pools."""
    from cameofarm.cluster.bootstrap import farm_status, farm_up
    from cameofarm.configs import StageName

    def replicas(status):
        return {p["replica"]: p for p in status["pools"]}

    before = farm_status(farm)
    assert len([r for r in replicas(before) if r.startswith("cameofarm-face_swap-")]) == 2
    farm_up(farm, progress=lambda _: None)
    same = farm_status(farm)
    assert {r: p["pid"] for r, p in replicas(same).items()} == {
        r: p["pid"] for r, p in replicas(before).items()
    }
    assert same["pid"] == before["pid"]  # the scheduler was kept too

    pools = dict(farm.pools)
    pools[StageName.FACE_SWAP] = pools[StageName.FACE_SWAP].model_copy(
        update={"replicas": 1, "cache_cameos": 3}
    )
    changed = farm.model_copy(update={"pools": pools})
    lines: list[str] = []
    farm_up(changed, progress=lines.append)
    assert "  cameofarm-face_swap-1: no longer in the config; stopped" in lines, lines
    assert "  cameofarm-face_swap-0: replaced (cache_cameos 8 → 3)" in lines, lines
    assert any("restarting the scheduler" in line for line in lines), lines
    after = farm_status(changed)
    swap = [p for r, p in replicas(after).items() if r.startswith("cameofarm-face_swap-")]
    assert len(swap) == 1 and swap[0]["settings"]["cache_cameos"] == 3
    assert swap[0]["pid"] != replicas(before)["cameofarm-face_swap-0"]["pid"]
    assert after["pid"] != before["pid"]
    # Untouched pools keep their replicas.
    assert (
        replicas(after)["cameofarm-voice-0"]["pid"] == replicas(before)["cameofarm-voice-0"]["pid"]
    )
