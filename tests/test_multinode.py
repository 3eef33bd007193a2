"""The farm on three Ray nodes that are separate hosts (tests/hosts.py): a head and two GPU
workers, the object store on S3 (moto) and the database on PostgreSQL, both on the LAN.
It follows the README's "Join a real Ray cluster" steps, then kills a worker node in the
middle of two renders (the one working on a chunk of theirs): they finish on the other
node, signed with the farm's one key."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.hosts import Host, HostsUnavailable, Lan, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
RAY_PORT = 6379


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the multi-node test: {why}")
    pytest.skip(why)


@pytest.fixture
def lan():
    # Only inside a namespace of our own (../shared/bin/loopback, as `make test` runs): the
    # test makes a bridge and must never touch the machine's real network.
    if {name for _, name in socket.if_nameindex()} != {"lo"}:
        _unavailable("run inside a loopback-only namespace (../shared/bin/loopback pytest ...)")
    root = Path(tempfile.mkdtemp(prefix="cfn-", dir="/tmp"))  # short: Ray's socket paths
    try:
        net = Lan(root)
    except HostsUnavailable as exc:
        shutil.rmtree(root)
        _unavailable(str(exc))
    try:
        yield net
    finally:
        net.close()
        shutil.rmtree(root, ignore_errors=True)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def s3(lan):
    """moto's S3 server on the LAN (its gateway address), as a MinIO endpoint."""
    pytest.importorskip("moto.server")
    port = 9000
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", lan.gateway, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            "moto to listen", lambda: proc.poll() is None and _listening(lan.gateway, port), 180
        )
        yield f"{lan.gateway}:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def postgres(lan):
    """A PostgreSQL server of its own listening on the LAN (.ci/postgres up --listen)."""
    script = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
    up = subprocess.run(
        ["bash", str(script), "up", "--listen", lan.gateway], capture_output=True, text=True
    )
    if up.returncode:
        _unavailable(f"no PostgreSQL server: {up.stderr.strip()[-400:]}")
    try:
        yield f"postgresql+psycopg://cameofarm@{lan.gateway}:5432/cameofarm"
    finally:
        subprocess.run(["bash", str(script), "down", up.stdout.strip()], capture_output=True)


def _run(host: Host, argv: list[str], env: dict[str, str]) -> str:
    done = host.run(argv, env)
    assert done.returncode == 0, (
        f"on {host.name}: {' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def _status(head: Host, env: dict[str, str]) -> dict:
    return json.loads(_run(head, [str(BIN / "cameofarm"), "status", "--json"], env))


def test_three_nodes_render_and_survive_a_lost_worker(
    lan, s3, postgres, analyzer, sample_clip, monkeypatch
):
    from cameofarm.cluster.jobs import JobStatus, get_job, job_history
    from cameofarm.configs import load_config
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.pipelines.enroll import enroll_recording
    from cameofarm.service.jobs_api import submit_render, wait_for_job
    from cameofarm.storage import open_farm_storage

    head, worker1, worker2 = lan.host("head", 1), lan.host("worker-1", 2), lan.host("worker-2", 3)
    token = lan.root / "ray_token"
    token.write_text(secrets.token_hex(32))
    farm_env = {
        "CAMEOFARM__STORAGE__KIND": "minio",
        "CAMEOFARM__STORAGE__ENDPOINT": s3,
        "CAMEOFARM__DATABASE__URL": postgres,
        "CAMEOFARM_S3_ACCESS_KEY": "testing",
        "CAMEOFARM_S3_SECRET_KEY": "testing",
    }
    # Every node: the same Ray token and S3 credentials (README: "Join a real Ray cluster").
    env = {
        **os.environ,
        **farm_env,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Each host's own farm folder (its private tmpfs): keys, caches.
        "CAMEOFARM__DATA_DIR": str(head.private / "farm"),
        "CAMEOFARM__CLUSTER__ADDRESS": f"{head.address}:{RAY_PORT}",
    }
    ray = str(BIN / "ray")
    temp = f"--temp-dir={head.private}/ray"  # the same path on each host, its own contents
    _run(head, [ray, "start", "--head", f"--node-ip-address={head.address}",
                f"--port={RAY_PORT}", "--num-cpus=1", "--num-gpus=0", temp,
                "--include-dashboard=false", "--object-store-memory=300000000"], env)  # fmt: skip
    for worker in (worker1, worker2):
        _run(worker, [ray, "start", f"--address={head.address}:{RAY_PORT}",
                      f"--node-ip-address={worker.address}", "--num-cpus=1", "--num-gpus=2",
                      temp, "--object-store-memory=1000000000"], env)  # fmt: skip
    up = _run(head, [str(BIN / "cameofarm"), "up"], env)
    assert "cluster: 3 CPUs, 4 GPUs" in up, up

    # The pools are spread: each pool of two replicas has one on each worker, none on the head.
    # The scheduler is on the head.
    status = _status(head, env)
    assert status["node"] == head.address
    replicas = status["pools"]
    assert {p["node"] for p in replicas} == {worker1.address, worker2.address}
    for stage in {p["stage"] for p in replicas}:
        nodes = [p["node"] for p in replicas if p["stage"] == stage]
        assert len(set(nodes)) == len(nodes), (stage, nodes)

    # An API host off the cluster (this process) enrolls a cameo and queues two jobs: it needs
    # only the database and the object store.
    for name, value in farm_env.items():
        monkeypatch.setenv(name, value)
    config = load_config(
        environ={
            **farm_env,
            "CAMEOFARM__DATA_DIR": str(lan.root / "api"),
            "CAMEOFARM__ENROLLMENT__MIN_SPEECH_SECONDS": "4",
        }
    )
    storage = open_farm_storage(config)
    cameo = enroll_recording(
        storage,
        analyzer,
        sample_clip,
        name="Sample",
        owner="tester",
        checks=config.enrollment,
        verified_by="test fixture",
    )
    jobs = [
        submit_render(config, storage, [cameo.id], script, "plus", "tester")
        for script in ("Two nodes can do this as well as three.", "And this one, just the same.")
    ]

    # Mid-render, the worker whose replica is working on a chunk of theirs loses power.
    busy: list[str] = []

    def working() -> bool:
        if any(get_job(storage.db, job.id).status is not JobStatus.RUNNING for job in jobs):
            return False
        found = _status(head, env)["pools"]
        busy[:] = [p["node"] for p in found if p.get("running_for") and p["stage"] != "voice"]
        return bool(busy)

    wait_for("a chunk of frames at work on a worker", working, 600)
    victim, survivor = (worker1, worker2) if busy[0] == worker1.address else (worker2, worker1)
    assert victim.kill() > 0

    root = head.path(head.private / "farm" / "keys" / "root.pem").read_bytes()
    for job in jobs:
        done = wait_for_job(storage, job.id, timeout=900)
        assert done.status is JobStatus.SUCCEEDED, done.error
        report = verify_mp4(storage.objects.get_bytes(done.output_key), root)
        assert report.valid and report.cameo_ids == (cameo.id,)
        for event in job_history(storage.db, job.id):  # the chunks tried again, for the log
            print(job.id, event["reason"])

    # Ray restarted the lost replicas on the worker that is left; every one answers.
    def all_on_survivor() -> bool:
        found = _status(head, env)["pools"]
        return all(p.get("reachable") and p["node"] == survivor.address for p in found)

    wait_for(f"every replica to run on {survivor.name}", all_on_survivor, 300)
    assert _status(head, env)["pid"] == status["pid"]  # the scheduler was never restarted


def test_a_replica_on_another_node_signs_with_the_farms_chain(farm_config, tmp_path):
    """Without namespaces: a replica whose node has no keys folder gets the chain `up` read;
    a chain that changed is written over; the key stays private to its owner."""
    from cameofarm.actors.stage import StageActor
    from cameofarm.configs import StageName
    from cameofarm.models.reference.provenance import ensure_signing_chain
    from cameofarm.storage.fetch import ObjectFetcher

    farm = ensure_signing_chain(tmp_path / "head" / "keys").files()
    node_keys = tmp_path / "worker" / "farm" / "keys"  # nothing there yet
    StageActor(
        StageName.COMPOSITE,
        farm_config.pools[StageName.COMPOSITE],
        "composite-w",
        node_keys,
        ObjectFetcher(farm_config.storage, tmp_path / "worker" / "farm"),
        signing=farm,
    )
    assert ensure_signing_chain(node_keys).files() == farm
    assert (node_keys / "signer.key").stat().st_mode & 0o777 == 0o600

    other = ensure_signing_chain(tmp_path / "other").files()
    assert other.fingerprint() != farm.fingerprint()
    farm.install(node_keys)  # the same chain again: nothing changes
    other.install(node_keys)
    assert ensure_signing_chain(node_keys).files() == other
    assert sorted(p.name for p in node_keys.iterdir()) == ["root.pem", "signer.key", "signer.pem"]
