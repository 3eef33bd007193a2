"""A farm is only ever its own: it starts a Ray head of its own beside another Ray cluster,
never joins that one, and stopping the farm leaves the other running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def other_cluster(tmp_path):
    """Somebody else's Ray head on this machine, with its own token (not ~/.ray)."""
    from cameofarm.cluster.ray_head import head_processes, reachable

    temp_dir = tempfile.mkdtemp(prefix="other-ray-", dir="/tmp")
    token = tmp_path / "other_token"
    token.write_text("0" * 64)
    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--ray-client-server-port={_free_port()}",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
            "--num-cpus=1",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    address = f"127.0.0.1:{port}"
    assert reachable(address)
    try:
        yield address, temp_dir
    finally:
        for pid in head_processes(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_up_beside_another_cluster_starts_its_own_and_down_leaves_the_other(
    farm_config, other_cluster
):
    import ray
    from cameofarm.cluster.bootstrap import farm_down, farm_status, farm_up
    from cameofarm.cluster.ray_head import head_processes, reachable, read_head

    other_address, other_temp = other_cluster
    others = sorted(head_processes(other_temp))
    assert others
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()

    try:  # a farm that fails to come up is stopped too
        farm_up(farm_config, progress=lambda _: None)
        head = read_head(farm_config)
        assert head is not None and head.address != other_address
        assert ray.get_runtime_context().gcs_address == head.address
        assert farm_status(farm_config)["queues"] == {"plus": 0, "pro": 0}
        assert home_token.exists() == had_home_token  # ~/.ray/auth_token untouched
        _health_answers_while_a_chunk_call_runs(farm_config, head.temp_dir)
        _a_hung_replica_misses_its_deadline_and_is_restarted(farm_config, head.temp_dir)
    finally:
        farm_down(farm_config, progress=lambda _: None)

    assert not head_processes(head.temp_dir)  # the farm's own processes are gone
    assert not reachable(head.address)
    assert sorted(head_processes(other_temp)) == others  # the other cluster's all live
    assert reachable(other_address)


def _health_answers_while_a_chunk_call_runs(config, scratch):
    """`cameofarm status` used to wait behind a Pro job's chunk calls: health now runs on the
    replica's control thread and answers while the work thread is busy."""
    import ray
    from cameofarm.actors.pools import control

    actor = _busy_stage(config, "busy-0")
    release = Path(scratch) / "release-busy-stage"
    busy = actor.work_until.remote(str(release))
    try:
        health = ray.get(control(actor.health).remote(), timeout=60)
        assert health["replica"] == "busy-0"
        ready, _ = ray.wait([busy], timeout=0)
        assert not ready  # health answered while the chunk call was still running
    finally:
        release.touch()
    assert ray.get(busy, timeout=60) is True
    ray.kill(actor)


def _busy_stage(config, name, max_restarts=0, restart_marker=""):
    """A real stage replica (composite, reference backend) with one extra call that works
    until a file appears: a chunk call that takes as long as the test wants."""
    import ray
    from cameofarm.actors.pools import CONCURRENCY_GROUPS
    from cameofarm.actors.stage import StageActor
    from cameofarm.configs import PoolConfig, StageName
    from cameofarm.storage.fetch import ObjectFetcher

    class BusyStage(StageActor):
        def __init__(self, *args, restart_marker: str = "", **kwargs):
            import time

            super().__init__(*args, **kwargs)
            if restart_marker:  # restarts take a while, like a replica reloading its model
                if Path(restart_marker).exists():
                    time.sleep(8)
                Path(restart_marker).touch()

        def work_until(self, path: str, limit_s: float = 120.0) -> bool:
            import time

            Path(path + ".started").touch()
            deadline = time.monotonic() + limit_s
            while not Path(path).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return Path(path).exists()

        def timed_work_until(self, path: str):
            # Only replicas named hung-* wait for the file; the others answer at once.
            limit = 120.0 if self.replica.startswith("hung") else 0.0
            return self._timed(lambda: self.work_until(path, limit), frames=0)

    data = Path(config.data_dir)
    return (
        ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(BusyStage)
        .options(num_cpus=0, max_restarts=max_restarts)
        .remote(
            StageName.COMPOSITE,
            PoolConfig(),
            name,
            data / "keys",
            ObjectFetcher(config.storage, data),
            restart_marker=restart_marker,
        )
    )


def _a_hung_replica_misses_its_deadline_and_is_restarted(config, scratch):
    """A chunk whose replica hangs is killed at its deadline (Ray restarts the replica) and
    tried again on the other replica; the retry is reported with its reason, the hung replica
    leaves the rotation, and later calls go to the healthy one."""
    import ray
    from cameofarm.actors.pools import CallDeadlines, RayStagePools, StageCallError, control
    from cameofarm.actors.rotation import RotationPolicy
    from cameofarm.configs import StageName

    hung = _busy_stage(config, "hung-0", max_restarts=-1)
    healthy = _busy_stage(config, "ok-0")
    before = ray.get(control(hung.health).remote(), timeout=60)["pid"]
    never = str(Path(scratch) / "never-released")
    pools = RayStagePools(
        {StageName.COMPOSITE: {"hung-0": hung, "ok-0": healthy}},
        CallDeadlines(first_call_seconds=3),
        RotationPolicy(failures_to_drain=1, drain_seconds=600, call_retries=1),
    )
    outputs, timings = pools.map(StageName.COMPOSITE, "timed_work_until", [(never,)])
    assert timings[0].replica == "ok-0"
    assert timings[0].retried == ("hung-0: did not answer within 3 s; restarted",)
    assert ray.get(outputs[0], timeout=60) is False  # ok-0 does not wait for the file
    health = {h["replica"]: h for h in pools.health()}
    assert health["hung-0"]["in_rotation"] is False
    assert health["hung-0"]["last_failure"].startswith("did not answer")
    assert health["ok-0"]["in_rotation"] is True and health["ok-0"]["reachable"] is True
    _, again = pools.map(StageName.COMPOSITE, "timed_work_until", [(never,)] * 2)
    assert {t.replica for t in again} == {"ok-0"} and not any(t.retried for t in again)
    assert _health_once_back(hung, other_than=before)["pid"] != before  # Ray restarted it

    # A lone replica killed (-9) in the middle of a call: the call waits for Ray to restart
    # it and runs again there, instead of burning its tries while the replica is down.
    lone = _busy_stage(
        config, "hung-1", max_restarts=-1, restart_marker=str(Path(scratch) / "hung-1-started")
    )
    first = ray.get(control(lone.health).remote(), timeout=60)["pid"]
    release = Path(scratch) / "release-lone"
    single = RayStagePools(
        {StageName.COMPOSITE: {"hung-1": lone}}, CallDeadlines(first_call_seconds=300)
    )
    result: dict = {}

    def call():
        try:
            result["out"] = single.map(StageName.COMPOSITE, "timed_work_until", [(str(release),)])
        except Exception as exc:
            result["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    started = Path(str(release) + ".started")
    _wait_until(started.exists)
    os.kill(first, signal.SIGKILL)
    release.touch()  # the call that runs again after the restart finds it at once
    worker.join(timeout=300)
    assert "error" not in result, result.get("error")
    _, timings = result["out"]
    assert timings[0].retried and timings[0].retried[0].startswith("hung-1: replica lost")
    assert _health_once_back(lone, other_than=first)["pid"] != first
    ray.kill(lone, no_restart=True)

    # With no other replica to try, the call fails as retryable: the job is queued again.
    alone = RayStagePools(
        {StageName.COMPOSITE: {"hung-0": hung}},
        CallDeadlines(first_call_seconds=3),
        RotationPolicy(call_retries=0),
    )
    with pytest.raises(StageCallError, match="did not answer within 3 s") as err:
        alone.map(StageName.COMPOSITE, "timed_work_until", [(never,)])
    assert err.value.retryable
    ray.kill(hung, no_restart=True)
    ray.kill(healthy, no_restart=True)


def _wait_until(condition, limit_s=120.0):
    import time

    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _health_once_back(actor, other_than=None, limit_s=120.0):
    """The replica's health once a process other than `other_than` answers (bounded wait
    while Ray kills and restarts it)."""
    import time

    import ray
    from cameofarm.actors.pools import control
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + limit_s
    while True:
        try:
            health = ray.get(control(actor.health).remote(), timeout=limit_s)
            if health["pid"] != other_than or time.monotonic() > deadline:
                return health
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_call_deadlines_are_learnt_per_method():
    """A stage's methods are timed apart: generating a whole prompt scene on a base-video
    replica is not held to five times one chunk's time (its replica would be killed)."""
    from cameofarm.actors.pools import CallDeadlines, RayStagePools
    from cameofarm.configs import StageName
    from cameofarm.monitoring.timing import CallTiming

    pools = RayStagePools({}, CallDeadlines(first_call_seconds=900, floor_seconds=10, slack=5))
    stage = StageName.BASE_VIDEO
    pools._learn(stage, "scene_video", [CallTiming("r", "", 0.0, 4.0, 25)])
    assert pools.deadline(stage, "scene_video") == 20.0  # 5 x its 4 s
    assert pools.deadline(stage, "prompt_scene") == 900  # not measured yet: the first-call time
    pools._learn(stage, "prompt_scene", [CallTiming("r", "", 0.0, 120.0, 48)])
    assert pools.deadline(stage, "prompt_scene") == 600.0
    assert pools.deadline(stage, "scene_video") == 20.0
