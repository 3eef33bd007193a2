"""The farm's Prometheus metrics, process by process, read back in the exposition format."""

from __future__ import annotations

import logging
import socket
import time
import types
import urllib.request

import pytest
from cameofarm.cluster.jobs import JobStatus, set_job_status, submit_job
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def _samples(*collectors) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the collectors expose, keyed by name and sorted labels."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples, metric, **labels) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def _submit(storage, farm_config, cameo_row):
    return submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hello there.",
        tier="plus",
        customer="tester",
    )


@pytest.mark.databases
def test_the_farm_state_is_read_from_the_database(storage, farm_config, cameo_row):
    from cameofarm.monitoring.collectors import AuditCheck, FarmStateCollector
    from cameofarm.storage.db import (
        JobRow,
        OrganisationRow,
        PurgeRow,
        UserRow,
        WebhookDeliveryRow,
    )

    now = time.time()
    with storage.db.session() as s:
        s.add(OrganisationRow(id="acme", created_at=now))
        s.add(UserRow(id="tester", org_id="acme", created_at=now))
    done, running, queued, withdrawn, anon = (
        _submit(storage, farm_config, cameo_row) for _ in range(5)
    )
    with storage.db.session() as s:  # a job submitted under a name that is no user's
        s.get(JobRow, anon.id).customer = "walk-in"
    set_job_status(storage.db, done.id, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, done.id, JobStatus.QUEUED, "replica lost; again")
    set_job_status(storage.db, done.id, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, done.id, JobStatus.SUCCEEDED, "published", output_key="o/x")
    set_job_status(storage.db, running.id, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, withdrawn.id, JobStatus.CANCELLED, "consent withdrawn: revoked")
    set_job_status(storage.db, anon.id, JobStatus.CANCELLED, "cancelled by its submitter")
    with storage.db.session() as s:
        s.add(
            PurgeRow(
                cameo_id=cameo_row.id,
                requested_by="tester",
                requested_at=now - 7200,
                deadline=now + 5 * 86400,
            )
        )
        for status in ("PENDING", "FAILED", "FAILED"):
            s.add(
                WebhookDeliveryRow(
                    user_id="tester",
                    job_id=done.id,
                    url="https://hooks.example/x",
                    body="{}",
                    status=status,
                    next_at=now,
                    created_at=now,
                )
            )

    audit = AuditCheck(valid=False, at=now - 10, rows=3)
    at = time.time() + 100  # the scrape
    samples = _samples(FarmStateCollector(storage.db, farm_config, lambda: audit, lambda: at))

    assert _value(samples, "cameofarm_farm_state_up") == 1
    total = "cameofarm_jobs_submitted_total"
    assert _value(samples, total, tier="plus", organisation="acme") == 4
    assert _value(samples, total, tier="plus", organisation="none") == 1  # no such user
    # `done` was dispatched twice, `running` once.
    assert _value(samples, "cameofarm_jobs_started_total", tier="plus", organisation="acme") == 3
    finished = "cameofarm_jobs_finished_total"
    assert _value(samples, finished, tier="plus", status="SUCCEEDED", organisation="acme") == 1
    assert _value(samples, finished, tier="plus", status="CANCELLED", organisation="acme") == 1
    assert _value(samples, finished, tier="plus", status="CANCELLED", organisation="none") == 1
    assert _value(samples, "cameofarm_queue_depth", tier="plus") == 1
    assert _value(samples, "cameofarm_queue_depth", tier="pro") == 0
    assert _value(samples, "cameofarm_running_jobs", tier="plus") == 1
    oldest = _value(samples, "cameofarm_queue_oldest_wait_seconds", tier="plus")
    assert oldest == pytest.approx(at - queued.submitted_at) and oldest > 100
    assert _value(samples, "cameofarm_queue_oldest_wait_seconds", tier="pro") == 0
    assert _value(samples, "cameofarm_tier_wait_objective_seconds", tier="plus") == 60
    consent = "cameofarm_consent_cancellations_total"
    assert _value(samples, consent, cause="withdrawn") == 1  # the submitter's own is not consent
    assert _value(samples, consent, cause="dispatch") == 0
    assert _value(samples, consent, cause="publish") == 0
    assert _value(samples, "cameofarm_purge_backlog") == 1
    headroom = _value(samples, "cameofarm_purge_deadline_headroom_seconds")
    assert headroom == pytest.approx(5 * 86400 - (at - now))
    pending = _value(samples, "cameofarm_purge_oldest_pending_seconds")
    assert pending == pytest.approx(7200 + at - now)
    assert _value(samples, "cameofarm_webhook_deliveries", status="FAILED") == 2
    assert _value(samples, "cameofarm_webhook_deliveries", status="DELIVERED") == 0
    assert _value(samples, "cameofarm_audit_chain_valid") == 0


def test_a_database_outage_is_reported_not_raised(farm_config, caplog):
    from cameofarm.monitoring.collectors import FarmStateCollector

    class Down:
        def session(self):
            raise ConnectionError("database is down")

    with caplog.at_level(logging.WARNING, "cameofarm.metrics"):
        samples = _samples(FarmStateCollector(Down(), farm_config))
    assert samples == {("cameofarm_farm_state_up", ()): 0}
    assert "database is down" in caplog.text


def _report(stage, replica, pid, reachable=True, gpus=(), **extra):
    return {
        "stage": stage,
        "replica": replica,
        "pid": pid,
        "reachable": reachable,
        "backend": "reference",
        "device": "cpu",
        "provider": "python",
        "models": {},
        "load_seconds": 1.5,
        "in_rotation": True,
        "gpus": list(gpus),
        **extra,
    }


def test_replica_restarts_and_model_loads_are_seen_across_polls():
    from cameofarm.monitoring.collectors import ReplicaWatch

    watch = ReplicaWatch()
    watch.observe([_report("voice", "voice-0", 100), _report("lip_sync", "lip_sync-0", 200)])
    watch.observe(
        [_report("voice", "voice-0", 100), _report("lip_sync", "lip_sync-0", None, False)]
    )
    watch.observe([_report("voice", "voice-0", 100), _report("lip_sync", "lip_sync-0", 201)])
    samples = _samples(watch)
    loads = "cameofarm_model_loads_total"
    common = {"backend": "reference", "models": ""}
    assert _value(samples, loads, stage="voice", replica="voice-0", **common) == 1
    assert _value(samples, loads, stage="lip_sync", replica="lip_sync-0", **common) == 2
    restarts = "cameofarm_replica_restarts_total"
    assert _value(samples, restarts, stage="lip_sync", replica="lip_sync-0") == 1
    assert _value(samples, restarts, stage="voice", replica="voice-0") == 0
    up = {"backend": "reference", "device": "cpu", "provider": "python"}
    assert _value(samples, "cameofarm_replica_up", stage="voice", replica="voice-0", **up) == 1
    # No replica read a GPU (none here): no GPU series at all, rather than zeros.
    assert not [k for k in samples if k[0].startswith("cameofarm_gpu_")]

    watch.observe([_report("lip_sync", "lip_sync-0", None, False, in_rotation=False)])
    samples = _samples(watch)
    assert (
        _value(samples, "cameofarm_replica_up", stage="lip_sync", replica="lip_sync-0", **up) == 0
    )
    rotation = "cameofarm_replica_in_rotation"
    assert _value(samples, rotation, stage="lip_sync", replica="lip_sync-0") == 0


def test_gpu_readings_are_exported_once_per_gpu():
    from cameofarm.monitoring.collectors import ReplicaWatch

    gpu = {
        "node": "n1",
        "index": 0,
        "uuid": "GPU-1",
        "name": "H200",
        "utilization": 0.75,
        "memory_used": 2**30,
        "memory_total": 2**37,
    }
    watch = ReplicaWatch()  # two replicas share GPU 0 (fractional num_gpus)
    watch.observe([_report("voice", "v0", 1, gpus=[gpu]), _report("lip_sync", "l0", 2, gpus=[gpu])])
    samples = _samples(watch)
    labels = {"node": "n1", "gpu": "0", "uuid": "GPU-1", "name": "H200"}
    assert _value(samples, "cameofarm_gpu_utilization_ratio", **labels) == 0.75
    assert _value(samples, "cameofarm_gpu_memory_used_bytes", **labels) == 2**30
    assert len([k for k in samples if k[0] == "cameofarm_gpu_memory_total_bytes"]) == 1


def test_nvml_readings_become_gpu_readings_and_nothing_without_nvml():
    from cameofarm.monitoring.gpu import read_gpus

    class FakeNvml:  # the pynvml calls read_gpus makes, as NVML answers them
        def nvmlDeviceGetCount(self):
            return 2

        def nvmlDeviceGetHandleByIndex(self, i):
            return i

        def nvmlDeviceGetUtilizationRates(self, h):
            return types.SimpleNamespace(gpu=40 + h)

        def nvmlDeviceGetMemoryInfo(self, h):
            return types.SimpleNamespace(used=1000 * (h + 1), total=8000)

        def nvmlDeviceGetName(self, h):
            return b"NVIDIA H200"

        def nvmlDeviceGetUUID(self, h):
            return f"GPU-{h}"

    readings = read_gpus([1, 5], nvml=FakeNvml())  # 5 is a logical GPU this node lacks
    assert [(r["index"], r["uuid"], r["name"]) for r in readings] == [(1, "GPU-1", "NVIDIA H200")]
    assert readings[0]["utilization"] == pytest.approx(0.41)
    assert readings[0]["memory_used"] == 2000
    assert read_gpus([0], nvml=False) == []
    assert read_gpus([], nvml=FakeNvml()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_metrics_endpoint_serves_and_a_busy_port_only_warns(caplog):
    from cameofarm.monitoring.metrics import serve_metrics

    assert serve_metrics("127.0.0.1", 0, "scheduler") is None  # off
    port = _free_port()
    url = serve_metrics("127.0.0.1", port, "scheduler")
    assert url == f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    assert "cameofarm_stage_seconds" in text
    with caplog.at_level(logging.WARNING, "cameofarm.metrics"):
        assert serve_metrics("127.0.0.1", port, "api") is None
    assert f"127.0.0.1:{port} is taken" in caplog.text and "monitoring.api_port" in caplog.text


def test_the_scheduler_watches_replicas_and_the_audit_chain(farm_config, storage, pools):
    from cameofarm.cluster.scheduler import Scheduler
    from cameofarm.monitoring.collectors import FarmStateCollector

    clock = [1000.0]
    sched = Scheduler(farm_config, pools, storage, executor=object(), clock=lambda: clock[0])
    assert sched.watch() == 2  # both due at first
    assert sched.watch() == 0  # neither due again yet
    clock[0] += farm_config.monitoring.replica_poll_seconds
    assert sched.watch() == 1
    samples = _samples(sched.replica_watch)
    up = [k for k, v in samples.items() if k[0] == "cameofarm_replica_up" and v == 1]
    assert len(up) == len(farm_config.pools)
    state = FarmStateCollector(storage.db, farm_config, lambda: sched.audit_check)
    assert _value(_samples(state), "cameofarm_audit_chain_valid") == 1


def test_api_requests_are_counted_by_route_template_and_status(farm_config, storage):
    from cameofarm.monitoring.metrics import API_RATE_LIMITED, API_REQUESTS
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    api = farm_config.api.model_copy(update={"burst": 2, "requests_per_minute": 1})
    config = farm_config.model_copy(update={"api": api})
    client = TestClient(build_app(config, api_factory=lambda: FarmAPI(config, storage)))

    def count(route, method, status):
        return API_REQUESTS.labels(route=route, method=method, status=status)._value.get()

    def limited():
        return API_RATE_LIMITED.labels(limit="key")._value.get()

    before = (
        count("/v1/jobs/{job_id}", "GET", "401"),
        count("unmatched", "GET", "404"),
        count("/v1/jobs/{job_id}", "GET", "429"),
        limited(),
    )
    for job_id in ("a", "b"):  # a key-less caller: the anonymous bucket, then 401
        assert client.get(f"/v1/jobs/{job_id}").status_code == 401
    assert client.get("/v1/jobs/c").status_code == 429  # the bucket is empty
    assert client.get("/no/such/path/" + "x" * 50).status_code == 404
    after = (
        count("/v1/jobs/{job_id}", "GET", "401"),
        count("unmatched", "GET", "404"),
        count("/v1/jobs/{job_id}", "GET", "429"),
        limited(),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 1, 1, 1]


def test_published_voices_are_counted_by_their_verdict():
    """Each voice in a published video counts once, by its report's verdict against the
    farm's targets and whether its words can be followed; a dialogue has two voices, and a
    report without a verdict is unjudged."""
    from cameofarm.monitoring.metrics import (
        VOICE_CLARITIES,
        VOICE_RENDERS,
        VOICE_VERDICTS,
        count_voices,
    )

    def counts():
        return {
            (v, c): VOICE_RENDERS.labels(tier="pro", verdict=v, clarity=c)._value.get()
            for v in VOICE_VERDICTS
            for c in VOICE_CLARITIES
        }

    before = counts()
    count_voices("pro", {"voice": {"to_cameo": 0.8, "meets_targets": True, "clear": True}})
    count_voices("pro", {"voice": {"to_cameo": 0.7, "meets_targets": False, "clear": False}})
    count_voices("pro", {"voice": {"unmeasured": "under a second of speech"}})
    count_voices("pro", None)  # no report at all
    dialogue = [
        {"voice": {"meets_targets": True, "clear": False}},
        {"voice": {"meets_targets": False}},  # stored before clarity was judged
    ]
    count_voices("pro", {"cast": dialogue, "dialogue": {}})
    after = counts()
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert moved == {
        ("meets", "clear"): 1,
        ("below", "hard_to_follow"): 1,
        ("unjudged", "unjudged"): 2,
        ("meets", "hard_to_follow"): 1,
        ("below", "unjudged"): 1,
    }
