"""`cameofarm top`: what it reads of the farm, who may read it, and what a frame shows."""

from __future__ import annotations

import json

import pytest
from cameofarm.cluster.jobs import JobStatus, set_job_status, submit_job
from click.testing import CliRunner
from rich.console import Console


def _submit(storage, farm_config, cameo_row, tier="plus"):
    return submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hello there.",
        tier=tier,
        customer="tester",
    )


def _times(storage, job_id, **times):
    from cameofarm.storage.db import JobRow

    with storage.db.session() as s:
        row = s.get(JobRow, job_id)
        for name, value in times.items():
            setattr(row, name, value)


@pytest.fixture
def busy_farm(storage, farm_config, cameo_row):
    """At `now`: Plus has 2 queued (oldest 90 s), 1 running (for 400 s), 3 started in the last 300 s
    (waits 2, 4, 30 s), of which 2 published (runs 10, 20 s) and 1 failed; one published
    long ago. Pro has nothing."""
    now = 1_000_000.0
    jobs = [_submit(storage, farm_config, cameo_row) for _ in range(6)]
    old, ok1, ok2, failed, running, queued = jobs
    for job, ended in ((old, JobStatus.SUCCEEDED), (ok1, JobStatus.SUCCEEDED)):
        set_job_status(storage.db, job.id, JobStatus.RUNNING, "dispatched")
        set_job_status(storage.db, job.id, ended, "published", output_key=f"o/{job.id}")
    set_job_status(storage.db, ok2.id, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, ok2.id, JobStatus.SUCCEEDED, "published", output_key="o/2")
    set_job_status(storage.db, failed.id, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, failed.id, JobStatus.FAILED, "bad input")
    set_job_status(storage.db, running.id, JobStatus.RUNNING, "dispatched")
    _times(storage, old.id, submitted_at=now - 4000, started_at=now - 3990, finished_at=now - 3900)
    _times(storage, ok1.id, submitted_at=now - 200, started_at=now - 198, finished_at=now - 188)
    _times(storage, ok2.id, submitted_at=now - 150, started_at=now - 146, finished_at=now - 126)
    _times(storage, failed.id, submitted_at=now - 100, started_at=now - 70, finished_at=now - 60)
    _times(storage, running.id, submitted_at=now - 500, started_at=now - 400)
    _times(storage, queued.id, submitted_at=now - 90)
    second = _submit(storage, farm_config, cameo_row)
    _times(storage, second.id, submitted_at=now - 10)
    return now, running


@pytest.mark.databases
def test_tiers_show_queues_now_and_throughput_over_the_window(storage, farm_config, busy_farm):
    from cameofarm.monitoring.live import read_tiers

    now, _ = busy_farm
    plus, pro = read_tiers(storage.db, farm_config, now, 300.0)
    assert (plus["tier"], plus["queued"], plus["running"]) == ("plus", 2, 1)
    assert plus["oldest_wait_s"] == pytest.approx(90)
    assert plus["wait_objective_s"] == 60
    assert plus["started"] == 3  # the running job started 400 s ago: outside the window
    assert plus["finished"] == {"SUCCEEDED": 2, "FAILED": 1}
    assert plus["succeeded_per_minute"] == pytest.approx(2 * 60 / 300)
    assert plus["wait_p50_s"] == pytest.approx(4)
    assert plus["wait_p95_s"] == pytest.approx(4 + 0.9 * 26)  # as the bench interpolates
    assert plus["run_p50_s"] == pytest.approx(15)
    assert pro == {
        "tier": "pro",
        "queued": 0,
        "running": 0,
        "oldest_wait_s": 0.0,
        "wait_objective_s": 300,
        "started": 0,
        "finished": {},
        "succeeded_per_minute": 0.0,
        "wait_p50_s": None,
        "wait_p95_s": None,
        "run_p50_s": None,
    }
    (plus_all,) = [
        t for t in read_tiers(storage.db, farm_config, now, 86_400) if t["tier"] == "plus"
    ]
    assert plus_all["finished"]["SUCCEEDED"] == 3


def test_the_farm_view_is_for_operators_and_says_when_the_farm_is_down(
    storage, farm_config, cameo_row
):
    from cameofarm.cameos.accounts import Principal
    from cameofarm.service.farm_api import BadRequest, FarmAPI, Forbidden

    job = _submit(storage, farm_config, cameo_row)
    set_job_status(storage.db, job.id, JobStatus.RUNNING, "dispatched")
    api = FarmAPI(farm_config, storage)
    with pytest.raises(Forbidden, match="only an operator"):
        api.farm_view(Principal("tester", "acme"))
    ops = Principal("ops", "acme", operator=True)
    with pytest.raises(BadRequest, match="between 10 s and 86400 s"):
        api.farm_view(ops, 1.0)
    view = api.farm_view(ops)
    # No farm runs here: the database's half still answers, and the view says why the rest
    # is missing instead of failing.
    assert view["scheduler"] is None
    assert "is not running" in view["scheduler_error"]
    assert [t["tier"] for t in view["tiers"]] == ["plus", "pro"]
    assert [j["id"] for j in view["running"]] == [job.id]
    assert view["running"][0]["stages"] == {}
    assert view["pools"] == []
    json.dumps(view)  # JSON-ready as it is


def test_the_farm_view_over_http(storage, farm_config):
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    farm = FarmAPI(farm_config, storage)
    key = farm.init_operator("ops", "acme")["api_key"]
    from cameofarm.cameos.accounts import Principal

    user_key = farm.create_user(Principal("ops", "acme", True), "tester", "acme")["api_key"]
    client = TestClient(build_app(farm_config, api_factory=lambda: farm))
    ops = {"Authorization": f"Bearer {key}"}
    answer = client.get("/v1/farm", headers=ops)
    assert answer.status_code == 200, answer.text
    assert answer.json()["window_s"] == 300
    assert [t["tier"] for t in answer.json()["tiers"]] == ["plus", "pro"]
    assert client.get("/v1/farm", params={"window_s": 5}, headers=ops).status_code == 422
    user = client.get("/v1/farm", headers={"Authorization": f"Bearer {user_key}"})
    assert user.status_code == 403 and "operator" in user.json()["error"]
    assert client.get("/v1/farm").status_code == 401


def _view(at, calls, busy, stages):
    return {
        "at": at,
        "window_s": 300.0,
        "scheduler": {
            "pid": 4242,
            "ticks": 17,
            "tick_errors": 0,
            "metrics": "http://127.0.0.1:9640/metrics",
            "recovered": [],
        },
        "scheduler_error": None,
        "tiers": [
            {
                "tier": "plus",
                "queued": 3,
                "running": 1,
                "oldest_wait_s": 75.0,
                "wait_objective_s": 60.0,
                "started": 4,
                "finished": {"SUCCEEDED": 5, "FAILED": 1},
                "succeeded_per_minute": 1.0,
                "wait_p50_s": 4.0,
                "wait_p95_s": 9.5,
                "run_p50_s": 21.0,
            }
        ],
        "waiting": {"pro": "tier at max_running (1)"},
        "pools": [
            {
                "stage": "face_swap",
                "replica": "face_swap-0",
                "backend": "reference",
                "device": "cpu",
                "reachable": True,
                "in_rotation": True,
                "calls": calls,
                "in_flight": 1,
                "busy_seconds": busy,
                "gpus": [],
            },
            {
                "stage": "lip_sync",
                "replica": "lip_sync-0",
                "backend": "reference",
                "device": "cpu",
                "reachable": True,
                "in_rotation": False,
                "back_in_s": 42.0,
                "calls": 3,
                "in_flight": 0,
                "busy_seconds": 1.0,
                "gpus": [],
            },
            {"stage": "voice", "replica": "voice-0", "reachable": False},
        ],
        "running": [
            {
                "id": "job0001",
                "tier": "plus",
                "stage": "face_swap",
                "progress": 0.3,
                "attempt": 2,
                "running_s": 12.5,
                "stages": stages,
            }
        ],
    }


def _text(renderable, width=200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_frame_shows_tiers_replicas_and_a_bar_per_stage():
    from cameofarm.service.cli_top import render_view

    before = _view(100.0, 10, 4.0, {"voice": [1, 1], "base_video": [8, 8], "face_swap": [1, 8]})
    now = _view(102.0, 12, 5.0, {"voice": [1, 1], "base_video": [8, 8], "face_swap": [3, 8]})
    text = _text(render_view(now, before))
    assert "scheduler pid 4242, 17 ticks, 0 errors" in text
    assert "75.0 s / 60.0 s" in text  # the oldest wait against the objective
    assert "4.0 s / 9.5 s" in text and "5 / 1 / 0" in text
    assert "pro waits: tier at max_running (1)" in text
    face_swap = next(line for line in text.splitlines() if "face_swap-0" in line)
    assert "50%" in face_swap  # 1 s busy of the 2 s between the frames
    assert "drained 42 s" in text and "unreachable" in text
    job = next(line for line in text.splitlines() if "job0001" in line)
    assert "1/1" in job and "8/8" in job and "3/8" in job
    assert job.count("·") == 2  # lip sync and composite have not begun
    assert "face_swap 30%" in job
    first = _text(render_view(before))  # no frame before it: no busy share yet
    assert "—" in next(line for line in first.splitlines() if "face_swap-0" in line)


def test_a_frame_without_the_scheduler_says_why():
    from cameofarm.service.cli_top import render_view

    view = _view(100.0, 0, 0.0, {})
    view.update(scheduler=None, scheduler_error="the farm is not running", pools=[])
    text = _text(render_view(view))
    assert "scheduler: the farm is not running" in text
    assert "pools" not in text and "job0001" in text


def test_top_once_and_json_on_this_machine(storage, farm_config, cameo_row, tmp_path):
    from cameofarm.service.cli import cli
    from cameofarm.service.farm_api import FarmAPI

    key = FarmAPI(farm_config, storage).init_operator("ops", "acme")["api_key"]
    env = {
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": str(farm_config.database.url),
        "CAMEOFARM_API_KEY": key,
        "COLUMNS": "200",
    }
    once = CliRunner().invoke(cli, ["top", "--once"], env=env)
    assert once.exit_code == 0, once.output
    assert "tiers" in once.output and "plus" in once.output and "is not running" in once.output
    as_json = CliRunner().invoke(cli, ["top", "--json", "--window", "60"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["window_s"] == 60
    keyless = CliRunner().invoke(cli, ["top", "--once"], env={**env, "CAMEOFARM_API_KEY": ""})
    assert keyless.exit_code != 0 and "API key" in keyless.output


def test_a_failed_refresh_is_shown_and_the_next_one_recovers():
    from cameofarm.service.cli_top import watch
    from cameofarm.service.farm_api import ApiError

    answers = [ApiError("cannot reach the API at http://x: refused"), _view(1.0, 1, 0.0, {})]

    def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    console = Console(width=200, record=True, color_system=None)
    watch(fetch, console, interval=0.0, frames=2)
    text = console.export_text()
    assert "cannot read the farm: cannot reach the API" in text
    assert "job0001" in text and not answers


def test_a_replica_counts_a_running_call_as_busy(pools):
    """`top`'s busy share moves while a long chunk runs, not only when it ends."""
    import threading

    from cameofarm.configs import StageName

    replica = pools.actors[StageName.COMPOSITE]
    started, release = threading.Event(), threading.Event()

    def long_call():
        started.set()
        assert release.wait(60)
        return []

    worker = threading.Thread(target=replica._timed, args=(long_call,))
    worker.start()
    assert started.wait(60)
    first = replica.health()["busy_seconds"]
    while replica.health()["busy_seconds"] <= first:  # the running call's time grows
        assert worker.is_alive()
    release.set()
    worker.join(60)
    done = replica.health()["busy_seconds"]
    assert done > first and replica.health()["busy_seconds"] == done  # idle: it stops growing
