"""Start, join, inspect and stop the farm on Ray: stage pools plus the scheduler actor."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cameofarm.actors.stage import StageActor
from cameofarm.configs import FarmConfig, StageName
from cameofarm.models.registry import BackendContext
from cameofarm.storage.fetch import ObjectFetcher

SCHEDULER_NAME = "cameofarm-scheduler"
Progress = Callable[[str], None]


class FarmError(RuntimeError):
    """The farm could not be started, reached or stopped; the message says what to do."""


def replica_name(stage: StageName, index: int) -> str:
    return f"cameofarm-{stage.value}-{index}"


def _ray_cli() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def _embedded(config: FarmConfig) -> bool:
    return config.cluster.address is None


def start_head(config: FarmConfig) -> None:
    """Start an embedded Ray head node on this machine with the configured logical GPUs."""
    c = config.cluster
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        f"--num-gpus={c.logical_gpus}",
        f"--object-store-memory={int(c.object_store_gb * 1024**3)}",
        f"--include-dashboard={'true' if c.dashboard else 'false'}",
        "--disable-usage-stats",
    ]
    if c.num_cpus is not None:
        cmd.append(f"--num-cpus={c.num_cpus}")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise FarmError(f"`ray start --head` failed:\n{proc.stderr[-1500:]}")


def connect(config: FarmConfig, start_if_missing: bool = False) -> None:
    """Connect this process to the farm's Ray cluster (starting the embedded head if asked)."""
    import ray

    if ray.is_initialized():
        return
    address = config.cluster.address or "auto"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(
            address=address,
            namespace=config.cluster.namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        if not (start_if_missing and _embedded(config)):
            hint = (
                "start it with `cameofarm up`"
                if _embedded(config)
                else f"check that a Ray cluster listens at {address}"
            )
            raise FarmError(f"no Ray cluster to join at {address}; {hint}") from exc
        start_head(config)
        ray.init(
            address="auto",
            namespace=config.cluster.namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )


def _find(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def _create_pools(config: FarmConfig, progress: Progress) -> dict[StageName, list[Any]]:
    import ray

    data_dir = Path(config.data_dir)
    ctx = BackendContext(keys_dir=data_dir / "keys", models_dir=data_dir / "models")
    fetcher = ObjectFetcher(config.storage, data_dir)
    remote = ray.remote(StageActor)
    pools: dict[StageName, list[Any]] = {}
    for stage in StageName:
        pool = config.pools[stage]
        group = []
        for i in range(pool.replicas):
            name = replica_name(stage, i)
            actor = _find(name) or remote.options(
                name=name,
                lifetime="detached",
                num_cpus=0,
                num_gpus=pool.num_gpus,
                max_restarts=2,
                max_task_retries=0,
            ).remote(stage, pool.backend, name, ctx, fetcher, pool.cache_cameos, ray.get_gpu_ids)
            group.append(actor)
        pools[stage] = group
    health = [a.health.remote() for group in pools.values() for a in group]
    for info in ray.get(health, timeout=600):
        progress(
            f"  {info['replica']:<28} backend={info['backend']:<10} "
            f"gpu_ids=[{info['gpu_ids']}] loaded in {info['load_seconds']:.2f}s"
        )
    return pools


def farm_up(config: FarmConfig, progress: Progress = print) -> dict[str, Any]:
    """Bring the farm up (idempotent): Ray, five stage pools, the scheduler loop."""
    import ray
    from cameofarm.actors.pools import RayStagePools
    from cameofarm.cluster.scheduler import Scheduler

    progress("starting Ray" if _embedded(config) else f"joining Ray at {config.cluster.address}")
    connect(config, start_if_missing=True)
    resources = ray.cluster_resources()
    progress(f"cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    progress("stage pools:")
    pools = _create_pools(config, progress)
    scheduler: Any = _find(SCHEDULER_NAME)
    if scheduler is None:
        scheduler = (
            ray.remote(Scheduler)
            .options(
                name=SCHEDULER_NAME,
                lifetime="detached",
                num_cpus=0,
                max_concurrency=config.scheduler.max_running_jobs + 4,
            )
            .remote(config, RayStagePools(pools))
        )
    ray.get(scheduler.start.remote(), timeout=120)
    status: dict[str, Any] = ray.get(scheduler.status.remote(), timeout=60)
    if status["recovered"]:
        progress(f"re-queued jobs interrupted by the last shutdown: {status['recovered']}")
    progress("scheduler running")
    return status


def farm_status(config: FarmConfig) -> dict[str, Any]:
    """Return the scheduler's status report, or raise FarmError if the farm is down."""
    import ray

    connect(config)
    scheduler = _find(SCHEDULER_NAME)
    if scheduler is None:
        raise FarmError("Ray is up but the farm is not; run `cameofarm up`")
    return dict(ray.get(scheduler.status.remote(), timeout=60))


def farm_down(config: FarmConfig, progress: Progress = print) -> None:
    """Stop the scheduler and pools; stop the embedded Ray node too."""
    import ray

    try:
        connect(config)
    except FarmError:
        progress("farm is not running")
        return
    scheduler = _find(SCHEDULER_NAME)
    if scheduler is not None:
        try:
            ray.get(scheduler.stop.remote(False), timeout=30)
        except Exception as exc:  # a dying scheduler is still killed below
            progress(f"scheduler did not stop cleanly: {exc}")
        ray.kill(scheduler, no_restart=True)
    for stage in StageName:
        for i in range(config.pools[stage].replicas):
            actor = _find(replica_name(stage, i))
            if actor is not None:
                ray.kill(actor, no_restart=True)
    progress("scheduler and stage pools stopped")
    ray.shutdown()
    if _embedded(config):
        proc = subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FarmError(f"`ray stop` failed: {proc.stderr[-500:]}")
        time.sleep(0.5)
        progress("embedded Ray stopped")
