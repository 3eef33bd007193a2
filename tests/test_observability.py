"""What an SRE gets: the shipped Prometheus configuration scraping a real farm, every Grafana
panel's query answered with data, and alert rules that promtool checks and unit-tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"


def _tool(name: str) -> str:
    """A Prometheus program; CI must have it (`.ci/debian prometheus`), elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Prometheus tests: {name} is not installed")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


def test_alert_rules_pass_promtool_and_each_fires_in_its_unit_test():
    promtool = _tool("promtool")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        run = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stdout + run.stderr
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert alerts == fired  # every alert is shown firing, with its rendered text


def test_the_shipped_dashboards_are_the_defined_ones():
    from cameofarm.monitoring.dashboards import DASHBOARDS, grafana_json

    folder = DEPLOY / "grafana" / "dashboards"
    shipped = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert shipped == {d.uid: grafana_json(d) for d in DASHBOARDS}, (
        "deploy/grafana/dashboards is stale: run "
        "`python -m cameofarm.monitoring.dashboards deploy/grafana/dashboards`"
    )
    titles = {d.title for d in DASHBOARDS}
    assert len(titles) == 5 and all(d.panels for d in DASHBOARDS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A real Prometheus on loopback, run with the shipped configuration (only the farm's
    ports are this test's), and its HTTP API."""

    def __init__(self, workdir: Path, scheduler_port: int, api_port: int) -> None:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        ports = {"cameofarm-scheduler": scheduler_port, "cameofarm-api": api_port}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", workdir / "alerts.yml")
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, exprs: list[str], timeout: float = 300) -> dict[str, list[dict]]:
        """Wait until every query returns data; fail naming those that never did."""
        deadline = time.monotonic() + timeout
        missing = list(exprs)
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}; see {self.log.name}")
            with contextlib.suppress(OSError):  # not listening yet
                missing = [e for e in missing if not self.query(e)]
            if not missing:
                return {e: self.query(e) for e in exprs}
            if time.monotonic() > deadline:
                pytest.fail(f"no data within {timeout:g} s for: {missing}")
            time.sleep(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# The series the farm promises (issue 14, item 1), each as a query that has data once jobs ran.
SERIES = [
    "cameofarm_jobs_submitted_total",
    "cameofarm_jobs_started_total",
    'cameofarm_jobs_finished_total{status="SUCCEEDED", organisation="acme"}',
    "cameofarm_queue_depth",
    "cameofarm_queue_oldest_wait_seconds",
    'cameofarm_job_queue_wait_seconds_count{tier="plus"} > 0',
    'cameofarm_job_run_seconds_count{tier="plus", status="SUCCEEDED"} > 0',
    'cameofarm_stage_seconds_count{tier="plus", stage="lip_sync", backend="reference"} > 0',
    'cameofarm_stage_frame_seconds_count{stage="face_swap"} > 0',
    "sum(cameofarm_voice_renders_total) >= 1",  # each published voice, by its verdict
    "rate(cameofarm_replica_busy_seconds_total[1m])",
    "cameofarm_replica_in_flight_calls",
    "cameofarm_replica_up == 1",
    "cameofarm_replica_restarts_total",
    "cameofarm_stage_call_retries_total",
    "cameofarm_replica_in_rotation",
    "cameofarm_model_loads_total >= 1",
    "cameofarm_consent_cancellations_total",
    "cameofarm_purge_backlog",
    "cameofarm_purge_deadline_headroom_seconds",
    "cameofarm_webhook_attempts_total",
    "cameofarm_audit_chain_valid == 1",
    'cameofarm_api_requests_total{route="/v1/jobs/{job_id}", status="200"}',
    'cameofarm_api_request_seconds_count{route="/healthz"}',
    'cameofarm_api_rate_limited_total{limit="key"} > 0',
    'up{job="cameofarm-scheduler"} == 1',
    'up{job="cameofarm-api"} == 1',
]


def _farm_log_records(config) -> list[dict]:
    """Every JSON record the farm's processes wrote into Ray's session logs."""
    from cameofarm.cluster.ray_head import read_head

    logs = Path(read_head(config).temp_dir) / "session_latest" / "logs"
    records = []
    for path in logs.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
    return records


def _wait_for_json(url: str, token: str, limit_s: float = 120.0):
    """GET `url` with a bearer token until it answers with JSON (a service still starting
    refuses at first)."""
    deadline = time.monotonic() + limit_s
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.load(answer)
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _frame(view) -> str:
    from cameofarm.service.cli_top import render_view
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render_view(view))
    return console.export_text()


@pytest.mark.integration
def test_prometheus_scrapes_the_farm_and_every_panel_has_data(farm_config, cameo, tmp_path):
    import ray
    from cameofarm.cameos.accounts import Principal
    from cameofarm.cluster.bootstrap import (
        FarmError,
        connect,
        farm_down,
        farm_links,
        farm_status,
        farm_up,
    )
    from cameofarm.cluster.jobs import JobStatus, get_job
    from cameofarm.cluster.ray_head import token_path
    from cameofarm.configs import LogConfig
    from cameofarm.monitoring.dashboards import DASHBOARDS
    from cameofarm.monitoring.gpu import read_gpus
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.serving import api_down, api_up
    from cameofarm.storage import open_farm_storage

    _tool("prometheus")
    monitoring = farm_config.monitoring.model_copy(
        update={"scheduler_port": _free_port(), "api_port": _free_port()}
    )
    monitoring = monitoring.model_copy(update={"log": LogConfig(format="json")})
    api = farm_config.api.model_copy(update={"port": _free_port(), "burst": 5})
    cluster = farm_config.cluster.model_copy(update={"dashboard": True, "dashboard_port": 0})
    config = farm_config.model_copy(
        update={"monitoring": monitoring, "api": api, "cluster": cluster}
    )
    prometheus = Prometheus(tmp_path, monitoring.scheduler_port, monitoring.api_port)
    try:
        farm_up(config, progress=lambda _: None)
        assert farm_status(config)["metrics"] == (
            f"http://127.0.0.1:{monitoring.scheduler_port}/metrics"
        )
        url = api_up(config, progress=lambda _: None)
        storage = open_farm_storage(config)
        farm = FarmAPI(config, storage)
        key = farm.init_operator("ops", "acme")["api_key"]
        farm.create_user(Principal("ops", "acme", operator=True), "tester", "acme")
        # 1. A bench run's worth of work: a Plus job rendered and published, asked about over
        # the API until the key's burst runs out (a rate-limit refusal).
        from cameofarm.service.jobs_api import submit_render, wait_for_job

        job = submit_render(config, storage, [cameo.id], "Metrics for everyone.", "plus", "tester")
        # `cameofarm top`'s view while it renders: the job with its stages' calls, call by
        # call (a Plus job spends seconds in each stage; the view is read many times a second).
        ops = Principal("ops", "acme", operator=True)
        staged = []
        while not staged and get_job(storage.db, job.id).status in (
            JobStatus.QUEUED,
            JobStatus.RUNNING,
        ):
            view = farm.farm_view(ops)
            staged = [j for j in view["running"] if j["id"] == job.id and j["stages"]]
        assert staged, "the job ended before the view ever showed its stages"
        for done_calls, total in staged[0]["stages"].values():
            assert 0 <= done_calls <= total
        row = next(line for line in _frame(view).splitlines() if job.id in line)
        assert any(f"{d}/{t}" in row for d, t in staged[0]["stages"].values()), row
        done = wait_for_job(storage, job.id, timeout=600)
        assert done.status is JobStatus.SUCCEEDED, done.error
        headers = {"Authorization": f"Bearer {key}"}
        # Over the API, from the Serve replica: the scheduler answers there too.
        request = urllib.request.Request(f"{url}/v1/farm", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            remote = json.load(answer)
        assert remote["scheduler_error"] is None, remote["scheduler_error"]
        assert {p["stage"] for p in remote["pools"]} == {s.value for s in config.pools}
        assert all("busy_seconds" in p and "in_flight" in p for p in remote["pools"])
        (plus,) = [t for t in remote["tiers"] if t["tier"] == "plus"]
        assert plus["finished"].get("SUCCEEDED", 0) >= 1
        codes = []
        urllib.request.urlopen(f"{url}/healthz", timeout=30).close()
        for _ in range(8):
            request = urllib.request.Request(f"{url}/v1/jobs/{job.id}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    codes.append(answer.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert 200 in codes and 429 in codes, codes

        # 2. Prometheus has every promised series, and every panel's query has data.
        prometheus.wait_for(SERIES)
        gpu = bool(read_gpus([0]))
        panels = [p for d in DASHBOARDS for p in d.panels if gpu or not p.needs_gpu]
        answers = prometheus.wait_for([p.expr for p in panels])
        assert all(answers.values())
        if not gpu:  # no NVIDIA GPU here: no GPU series at all, never zeros standing in
            assert prometheus.query('{__name__=~"cameofarm_gpu_.*"}') == []
        stages = prometheus.query("sum by (stage) (cameofarm_stage_seconds_count)")
        assert {s["metric"]["stage"] for s in stages} == {s.value for s in config.pools}

        # 3. The logs, in JSON: the job's records name it, its tier and each stage; each
        # replica's records name its stage and replica.
        records = _farm_log_records(config)
        mine = [r for r in records if r.get("job") == job.id]
        assert {r["tier"] for r in mine} == {"plus"}
        assert {r.get("stage") for r in mine} >= {s.value for s in config.pools}
        assert any(r["message"].startswith("run ended SUCCEEDED") for r in mine)
        loaded = {r["replica"]: r["stage"] for r in records if r["message"].startswith("loaded")}
        assert set(loaded.values()) == {s.value for s in config.pools}

        # 4. Ray's dashboard, turned on by config, answers where `farm_links` says.
        dashboard = farm_links(config)["Ray dashboard"].split()[0]
        token = token_path(config).read_text().strip()
        version = _wait_for_json(f"{dashboard}/api/version", token)
        assert version["ray_version"] == ray.__version__
    finally:
        prometheus.stop()
        with contextlib.suppress(FarmError):  # the farm may not have come up at all
            if not ray.is_initialized():
                connect(config)
            api_down(config)
        farm_down(config, progress=lambda _: None)
