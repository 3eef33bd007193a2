"""The farm's Grafana dashboards, defined once here and written as provisioning JSON.

`python -m cameofarm.monitoring.dashboards DIR` writes one JSON file per dashboard; the
shipped copies are in deploy/grafana/dashboards/ and a test keeps them equal to these
definitions. Every panel's query is plain PromQL over the farm's own series (fixed windows,
no Grafana-only macros), so the same text is what the tests run against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "cameofarm-prometheus"}


@dataclass(frozen=True)
class Panel:
    """One time-series panel: a title, a PromQL query, its legend and unit. `needs_gpu`
    panels show data only on nodes with NVIDIA GPUs (no GPU series exist elsewhere)."""

    title: str
    expr: str
    legend: str = ""
    unit: str = "short"
    needs_gpu: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def _quantile(q: float, metric: str, by: str, window: str = "15m") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{window}])))"


def _mean(metric: str, by: str, window: str = "15m") -> str:
    return (
        f"sum by ({by}) (rate({metric}_sum[{window}])) / "
        f"sum by ({by}) (rate({metric}_count[{window}]))"
    )


FINISHED = "cameofarm_jobs_finished_total"

DASHBOARDS = (
    Dashboard(
        "cameofarm-overview",
        "cameofarm: farm overview",
        "Throughput, queues and waits per tier, and how jobs end.",
        (
            Panel(
                "Videos published per minute, by tier",
                f'sum by (tier) (rate({FINISHED}{{status="SUCCEEDED"}}[15m])) * 60',
                "{{tier}}",
                "short",
            ),
            Panel("Queue depth, by tier", "sum by (tier) (cameofarm_queue_depth)", "{{tier}}"),
            Panel(
                "Queue wait p95 (dispatched jobs), by tier",
                _quantile(0.95, "cameofarm_job_queue_wait_seconds", "tier"),
                "{{tier}}",
                "s",
            ),
            Panel(
                "Wait objective, by tier",
                "max by (tier) (cameofarm_tier_wait_objective_seconds)",
                "{{tier}} objective",
                "s",
            ),
            Panel(
                "Oldest queued job's wait, by tier",
                "max by (tier) (cameofarm_queue_oldest_wait_seconds)",
                "{{tier}}",
                "s",
            ),
            Panel("Jobs running, by tier", "sum by (tier) (cameofarm_running_jobs)", "{{tier}}"),
            Panel(
                "Success ratio of ended jobs (1 h), by tier",
                f'sum by (tier) (increase({FINISHED}{{status="SUCCEEDED"}}[1h])) / '
                f"sum by (tier) (increase({FINISHED}[1h]))",
                "{{tier}}",
                "percentunit",
            ),
            Panel(
                "Jobs ended, by tier and status",
                f"sum by (tier, status) ({FINISHED})",
                "{{tier}} {{status}}",
            ),
            Panel(
                "Voices published (1 h), by tier and verdict against the farm's voice targets",
                "sum by (tier, verdict) (increase(cameofarm_voice_renders_total[1h]))",
                "{{tier}} {{verdict}}",
            ),
            Panel(
                "Voices published (1 h) whose words a recogniser cannot follow, by tier",
                "sum by (tier) (increase(cameofarm_voice_renders_total"
                '{clarity="hard_to_follow"}[1h]))',
                "{{tier}}",
            ),
            Panel(
                "Jobs submitted per minute, by organisation",
                "sum by (organisation) (rate(cameofarm_jobs_submitted_total[15m])) * 60",
                "{{organisation}}",
            ),
        ),
    ),
    Dashboard(
        "cameofarm-stages",
        "cameofarm: stage breakdown",
        "Where a job's time goes: each render stage by tier and backend, per frame.",
        (
            Panel(
                "Stage time p95, by stage and backend",
                _quantile(0.95, "cameofarm_stage_seconds", "stage, backend"),
                "{{stage}} ({{backend}})",
                "s",
            ),
            Panel(
                "Mean stage time, by tier and stage",
                _mean("cameofarm_stage_seconds", "tier, stage"),
                "{{tier}} {{stage}}",
                "s",
            ),
            Panel(
                "Seconds per frame, by stage and backend",
                _mean("cameofarm_stage_frame_seconds", "stage, backend"),
                "{{stage}} ({{backend}})",
                "s",
            ),
            Panel(
                "Chunk call time p95, by stage",
                _quantile(0.95, "cameofarm_stage_call_seconds", "stage"),
                "{{stage}}",
                "s",
            ),
            Panel(
                "Job run time p95, by tier",
                _quantile(0.95, "cameofarm_job_run_seconds", "tier", "1h"),
                "{{tier}}",
                "s",
            ),
            Panel(
                "Calls tried again (1 h), by stage and reason",
                "sum by (stage, reason) (increase(cameofarm_stage_call_retries_total[1h]))",
                "{{stage}} {{reason}}",
            ),
        ),
    ),
    Dashboard(
        "cameofarm-capacity",
        "cameofarm: capacity",
        "Replicas and GPUs: how busy, how healthy, what they loaded.",
        (
            Panel(
                "Replica busy ratio",
                "sum by (stage, replica) (rate(cameofarm_replica_busy_seconds_total[5m]))",
                "{{replica}}",
                "percentunit",
            ),
            Panel(
                "Calls in flight, by stage",
                "sum by (stage) (cameofarm_replica_in_flight_calls)",
                "{{stage}}",
            ),
            Panel(
                "Replicas up and in rotation, by stage",
                "sum by (stage) (cameofarm_replica_up * on (stage, replica) "
                "cameofarm_replica_in_rotation)",
                "{{stage}}",
            ),
            Panel(
                "Replica restarts (1 h), by stage",
                "sum by (stage) (increase(cameofarm_replica_restarts_total[1h]))",
                "{{stage}}",
            ),
            Panel(
                "Model loads, by stage and backend",
                "sum by (stage, backend) (cameofarm_model_loads_total)",
                "{{stage}} ({{backend}})",
            ),
            Panel(
                "GPU utilisation",
                "max by (node, gpu) (cameofarm_gpu_utilization_ratio)",
                "{{node}} GPU {{gpu}}",
                "percentunit",
                needs_gpu=True,
            ),
            Panel(
                "GPU memory in use",
                "max by (node, gpu) (cameofarm_gpu_memory_used_bytes / "
                "cameofarm_gpu_memory_total_bytes)",
                "{{node}} GPU {{gpu}}",
                "percentunit",
                needs_gpu=True,
            ),
        ),
    ),
    Dashboard(
        "cameofarm-consent",
        "cameofarm: consent and privacy",
        "Consent withdrawn in flight, takedowns, purge deadlines and the audit chain.",
        (
            Panel(
                "Consent cancellations (24 h), by cause",
                "sum by (cause) (increase(cameofarm_consent_cancellations_total[24h]))",
                "{{cause}}",
            ),
            Panel(
                "Consent cancellations, all time, by cause",
                "sum by (cause) (cameofarm_consent_cancellations_total)",
                "{{cause}}",
            ),
            Panel("Takedowns, all time", "sum(cameofarm_takedowns_total)", "takedowns"),
            Panel("Purges waiting", "max(cameofarm_purge_backlog)", "deleted cameos not purged"),
            Panel(
                "Days to the nearest purge deadline",
                "min(cameofarm_purge_deadline_headroom_seconds) / 86400",
                "days left",
                "d",
            ),
            Panel(
                "Oldest unfinished purge",
                "max(cameofarm_purge_oldest_pending_seconds)",
                "age",
                "s",
            ),
            Panel(
                "Audit chain verifies (1 = yes)",
                "min(cameofarm_audit_chain_valid)",
                "audit chain",
            ),
        ),
    ),
    Dashboard(
        "cameofarm-api",
        "cameofarm: API",
        "Requests, errors, latency and refusals at the HTTP API; webhook deliveries.",
        (
            Panel(
                "Requests per second, by route and status",
                "sum by (route, status) (rate(cameofarm_api_requests_total[5m]))",
                "{{route}} {{status}}",
                "reqps",
            ),
            Panel(
                "Share of requests answered 5xx",
                # No 5xx series yet means none was answered: a share of 0, not no data.
                '(sum(rate(cameofarm_api_requests_total{status=~"5.."}[5m])) or vector(0)) / '
                "sum(rate(cameofarm_api_requests_total[5m]))",
                "5xx",
                "percentunit",
            ),
            Panel(
                "Latency p95, by route",
                _quantile(0.95, "cameofarm_api_request_seconds", "route", "5m"),
                "{{route}}",
                "s",
            ),
            Panel(
                "Rate-limit refusals (1 h), by limit",
                "sum by (limit) (increase(cameofarm_api_rate_limited_total[1h]))",
                "{{limit}}",
            ),
            Panel(
                "Webhook attempts (1 h), by outcome",
                "sum by (outcome) (increase(cameofarm_webhook_attempts_total[1h]))",
                "{{outcome}}",
            ),
            Panel(
                "Webhook deliveries, by state",
                "max by (status) (cameofarm_webhook_deliveries)",
                "{{status}}",
            ),
        ),
    ),
)


def grafana_json(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's provisioning JSON (two panels a row)."""
    panels = []
    for i, panel in enumerate(dashboard.panels):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel.title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DATASOURCE,
                        "expr": panel.expr,
                        "legendFormat": panel.legend,
                    }
                ],
            }
        )
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["cameofarm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": panels,
    }


def write_dashboards(directory: Path) -> list[Path]:
    """Write every dashboard's JSON into `directory`; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in DASHBOARDS:
        path = directory / f"{dashboard.uid}.json"
        path.write_text(json.dumps(grafana_json(dashboard), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cameofarm.monitoring.dashboards DIR")
    for written in write_dashboards(Path(sys.argv[1])):
        print(written)
