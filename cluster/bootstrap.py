"""Start, join, inspect and stop the farm on Ray: stage pools plus the scheduler actor.

The actor and model code is imported only where pools are made: `cameofarm status` and
`down` load just Ray and the config, so a person typing them waits for little but Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cameofarm.cluster.ray_head import (
    HeadError,
    reachable,
    read_head,
    start_head,
    stop_head,
    token_path,
    use_auth,
)
from cameofarm.configs import FarmConfig, StageName

if TYPE_CHECKING:
    from cameofarm.actors.pools import CallDeadlines
    from cameofarm.actors.rotation import RotationPolicy
    from cameofarm.models.reference.provenance import SigningFiles

SCHEDULER_NAME = "cameofarm-scheduler"
Progress = Callable[[str], None]


class FarmError(RuntimeError):
    """The farm could not be started, reached or stopped; the message says what to do."""


def replica_name(stage: StageName, index: int) -> str:
    return f"cameofarm-{stage.value}-{index}"


def _embedded(config: FarmConfig) -> bool:
    return config.cluster.address is None


def connect(config: FarmConfig, start_if_missing: bool = False) -> None:
    """Connect this process to the farm's Ray cluster: its own embedded head (started first
    if asked), or the cluster at `cluster.address`. Never Ray's auto-detected cluster."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _embedded(config):
        head = read_head(config)
        if head is None or not reachable(head.address):
            if not start_if_missing:
                raise FarmError(
                    f"the farm in {config.data_dir} is not running (its Ray head is not up); "
                    "start it with `cameofarm up`"
                )
            if head is not None:
                stop_head(config)  # what is left of a head that died
            try:
                head = start_head(config)
            except HeadError as exc:
                raise FarmError(str(exc)) from None
        use_auth(config)  # the farm's own token, for this process and its workers
        address = head.address
    else:
        address = str(config.cluster.address)
        if not reachable(address, timeout=5):
            raise FarmError(
                f"no Ray cluster answers at {address}; check cluster.address and that the "
                "cluster is up (its auth settings come from your environment: RAY_AUTH_MODE, "
                "RAY_AUTH_TOKEN_PATH)"
            )
    try:
        ray.init(
            address=address,
            namespace=config.cluster.namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError) as exc:
        raise FarmError(f"could not join Ray at {address}: {exc}") from None


def _find(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def pool_settings(config: FarmConfig, stage: StageName) -> dict[str, Any]:
    """What a replica is made with and cannot change while it lives: `up` replaces a replica
    whose settings differ from the config's."""
    from cameofarm.actors.stage import CALLS_ADMITTED

    return {
        **config.pools[stage].model_dump(exclude={"replicas", "min_replicas", "max_replicas"}),
        "log": config.monitoring.log.model_dump(),
        "calls_admitted": CALLS_ADMITTED,  # replicas made before calls waited by priority go
    }


def _stage_replicas() -> dict[str, Any]:
    """This farm's stage replicas that exist now, by name (any count, any stage)."""
    import ray

    names = [
        n if isinstance(n, str) else n["name"]
        for n in ray.util.list_named_actors(all_namespaces=False)
    ]
    prefixes = tuple(f"cameofarm-{stage.value}-" for stage in StageName)
    found = {}
    for name in names:
        if name.startswith(prefixes) and name.rsplit("-", 1)[-1].isdigit():
            actor = _find(name)
            if actor is not None:
                found[name] = actor
    return found


def _kill(name: str, actor: Any, limit_s: float = 120.0) -> None:
    """Kill a named actor for good and wait until its name is free to be used again."""
    import time

    import ray

    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + limit_s
    while _find(name) is not None:
        if time.monotonic() > deadline:
            raise FarmError(f"{name} was killed but its name is still taken after {limit_s:.0f} s")
        time.sleep(0.1)


def _outdated(actor: Any, wanted: dict[str, Any]) -> str | None:
    """Why an existing replica must be replaced (None: it is what the config asks for)."""
    import ray
    from cameofarm.actors.pools import control

    try:
        info = ray.get(control(actor.health).remote(), timeout=60)
    except Exception as exc:  # a replica that does not answer is replaced, not kept
        return f"did not answer ({type(exc).__name__})"
    have = info.get("settings") or {"backend": info.get("backend")}
    changed = [f"{k} {have.get(k)!r} → {v!r}" for k, v in wanted.items() if have.get(k) != v]
    return ", ".join(changed) or None


@dataclass(frozen=True)
class ReplicaMaker:
    """Makes a stage's replicas as the config says, for `up` and for the autoscaler (the
    scheduler holds one). Picklable: it travels to the scheduler actor."""

    config: FarmConfig
    signing: SigningFiles  # the farm's signing chain, as `up` read it on its node

    def settings(self, stage: StageName) -> dict[str, Any]:
        # A replica made with another chain is replaced.
        return {**pool_settings(self.config, stage), "signer": self.signing.fingerprint()}

    def names(self, stage: StageName) -> list[str]:
        """Every name the stage's replicas may have, in the order they are made."""
        return [replica_name(stage, i) for i in range(self.config.pools[stage].highest)]

    def existing(self, stage: StageName) -> dict[str, Any]:
        """The stage's replicas that exist now (one the autoscaler made included)."""
        found = {name: _find(name) for name in self.names(stage)}
        return {name: actor for name, actor in found.items() if actor is not None}

    def __call__(self, stage: StageName, name: str) -> Any:
        import ray
        from cameofarm.actors.pools import CONCURRENCY_GROUPS
        from cameofarm.actors.stage import CALLS_ADMITTED, StageActor
        from cameofarm.storage.fetch import ObjectFetcher

        data_dir = Path(self.config.data_dir)
        pool = self.config.pools[stage]
        remote = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(StageActor)  # type: ignore[call-overload]
        return remote.options(
            name=name,
            lifetime="detached",
            num_cpus=0,
            num_gpus=pool.num_gpus,
            # Always restarted: a replica killed by the OOM killer or a driver fault comes
            # back; one that keeps failing leaves the rotation instead.
            max_restarts=-1,
            # A chunk is retried on another replica by the pools, not here.
            max_task_retries=0,
            # Calls wait inside the replica, by priority (StageActor.call).
            max_concurrency=CALLS_ADMITTED,
            # A pool's replicas on different nodes: losing a node leaves each stage replicas
            # to retry its chunks on while Ray restarts the lost ones.
            scheduling_strategy="SPREAD",
        ).remote(
            stage,
            pool,
            name,
            data_dir / "keys",
            ObjectFetcher(self.config.storage, data_dir),
            ray.get_gpu_ids,
            self.settings(stage),
            self.config.monitoring.log,
            self.signing,
        )


def _create_pools(
    config: FarmConfig, progress: Progress
) -> tuple[dict[StageName, dict[str, Any]], bool, ReplicaMaker]:
    """Make every configured replica exist with the configured settings; return the pools,
    whether any replica was added, replaced or removed (the scheduler must then take the new
    pools), and the maker the autoscaler makes more with. A pool keeps the replicas its
    autoscaler added (up to max_replicas) and gets back to `replicas` if it has fewer."""
    from cameofarm.models.reference.provenance import ensure_signing_chain
    from cameofarm.storage.fetch import ObjectFetcher

    data_dir = Path(config.data_dir)
    _refuse_missing_models(config, ObjectFetcher(config.storage, data_dir))
    # The farm's one signing identity, from this node's keys folder: replicas on other nodes
    # are handed it.
    make = ReplicaMaker(config, ensure_signing_chain(data_dir / "keys").files())
    existing = _stage_replicas()
    allowed = {name for stage in StageName for name in make.names(stage)}
    changed = False
    for name in sorted(set(existing) - allowed):
        progress(f"  {name}: no longer in the config; stopped")
        _kill(name, existing.pop(name))
        changed = True
    pools: dict[StageName, dict[str, Any]] = {}
    for stage in StageName:
        settings = make.settings(stage)
        group = {}
        for i, name in enumerate(make.names(stage)):
            actor = existing.get(name)
            if actor is not None:
                why = _outdated(actor, settings)
                if why is not None:
                    progress(f"  {name}: replaced ({why})")
                    _kill(name, actor)
                    actor = None
            if actor is None and i < config.pools[stage].replicas:
                changed = True
                actor = make(stage, name)
            if actor is not None:
                group[name] = actor
        pools[stage] = group
    for name, info in _loaded(pools).items():
        models = " ".join(f"{k}={v}" for k, v in info["models"].items())
        progress(
            f"  {name:<28} backend={info['backend']:<11} device={info['device']} "
            f"provider={info['provider']} gpu_ids=[{info['gpu_ids']}]"
            + (f" {models}" if models else "")
            + f" loaded in {info['load_seconds']:.2f}s"
        )
    return pools, changed, make


def _refuse_missing_models(config: FarmConfig, fetcher: Any) -> None:
    """Refuse to start pools whose models are not in the model store, naming each one and the
    import command, before any replica is made."""
    from cameofarm.models.placement import missing_models
    from cameofarm.models.store import ModelStore

    wanted = {stage: pool.models for stage, pool in config.pools.items() if pool.models}
    if not wanted:
        return
    store = ModelStore(fetcher.store)
    problems = [
        f"pool {stage.value}: {problem}"
        for stage, refs in wanted.items()
        for problem in missing_models(dict(refs), store)
    ]
    if problems:
        raise FarmError("cannot start the farm:\n  " + "\n  ".join(problems))


def _loaded(pools: dict[StageName, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every replica's health once its backend has loaded. A replica that cannot load (a
    corrupt model, a missing package, no GPU for device: cuda) is removed and reported."""
    import ray
    from cameofarm.actors.pools import control

    actors = {name: a for group in pools.values() for name, a in group.items()}
    calls = {name: control(a.health).remote() for name, a in actors.items()}
    infos, failed = {}, []
    for name, ref in calls.items():
        try:
            infos[name] = ray.get(ref, timeout=600)
        except Exception as exc:  # the constructor's error, as Ray reports it
            failed.append(f"{name}: {_creation_error(exc)}")
            _kill(name, actors[name])
    if failed:
        raise FarmError("stage replicas could not start:\n  " + "\n  ".join(failed))
    return infos


def _creation_error(exc: BaseException) -> str:
    """The last line of the replica constructor's error (Ray wraps it in a traceback)."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _deadlines(config: FarmConfig) -> CallDeadlines:
    from cameofarm.actors.pools import CallDeadlines

    s = config.scheduler
    return CallDeadlines(s.call_first_seconds, s.call_floor_seconds, s.call_slack)


def _rotation(config: FarmConfig) -> RotationPolicy:
    from cameofarm.actors.rotation import RotationPolicy

    s = config.scheduler
    return RotationPolicy(s.replica_failures_to_drain, s.replica_drain_seconds, s.call_retries)


def farm_up(config: FarmConfig, progress: Progress = print) -> dict[str, Any]:
    """Bring the farm up (idempotent): Ray, five stage pools, the scheduler loop."""
    import ray
    from cameofarm.actors.pools import RayStagePools
    from cameofarm.cluster.scheduler import FarmScheduler

    progress("starting Ray" if _embedded(config) else f"joining Ray at {config.cluster.address}")
    connect(config, start_if_missing=True)
    resources = ray.cluster_resources()
    progress(f"cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    for what, where in farm_links(config).items():
        progress(f"{what}: {where}")
    progress("stage pools:")
    pools, changed, make = _create_pools(config, progress)
    scheduler: Any = _find(SCHEDULER_NAME)
    if scheduler is not None and changed:
        # The running scheduler holds the old replicas: a new one takes the new pools, and
        # re-queues what the old one was running (as after a crash).
        progress("pools changed: restarting the scheduler (its running jobs run again)")
        with contextlib.suppress(Exception):
            ray.get(scheduler.stop.remote(False), timeout=30)
        _kill(SCHEDULER_NAME, scheduler)
        scheduler = None
    if scheduler is None:
        scheduler = (
            ray.remote(FarmScheduler)
            .options(
                name=SCHEDULER_NAME,
                lifetime="detached",
                num_cpus=0,
                max_concurrency=config.scheduler.max_running_jobs + 4,
                # Supervised: Ray restarts a crashed scheduler, which re-queues the jobs it
                # was running and starts its loop by itself; no one has to run `up`.
                max_restarts=-1,
                # On the head node, as Ray's own controllers: a worker node that dies takes
                # only stage replicas with it (soft node affinity is not kept for a detached
                # actor: it landed on workers too, measured on a three-node cluster).
                resources={HEAD_NODE: 0.001},
            )
            .remote(config, RayStagePools(pools, _deadlines(config), _rotation(config), make))
        )
    ray.get(scheduler.start.remote(), timeout=120)
    status: dict[str, Any] = ray.get(scheduler.status.remote(), timeout=60)
    if status["recovered"]:
        progress(f"re-queued jobs interrupted by the last shutdown: {status['recovered']}")
    progress("scheduler running")
    return status


# Ray gives the head node this resource (Serve pins its controller there the same way).
HEAD_NODE = "node:__internal_head__"


def farm_links(config: FarmConfig) -> dict[str, str]:
    """Where an operator looks on this machine: the farm processes' logs and, when
    cluster.dashboard is on, Ray's dashboard (an embedded head's; a joined cluster has its
    own, wherever its operators put it)."""
    head = read_head(config) if _embedded(config) else None
    if head is None:
        return {"logs": "in Ray's session logs on each node (session_latest/logs/worker-*.err)"}
    links = {"logs": f"{head.temp_dir}/session_latest/logs (scheduler, replicas: worker-*.err)"}
    if config.cluster.dashboard and "dashboard" in head.ports:
        links["Ray dashboard"] = (
            f"http://127.0.0.1:{head.ports['dashboard']} (it asks for the farm's Ray token: "
            f"the contents of {token_path(config).resolve()})"
        )
    return links


def farm_status(config: FarmConfig, timeout: float = 60) -> dict[str, Any]:
    """Return the scheduler's status report, or raise FarmError if the farm is down or the
    scheduler does not answer within `timeout` seconds. Works from any process on the farm's
    Ray cluster, an API replica (Serve's own namespace) included."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    connect(config)
    try:
        scheduler = ray.get_actor(SCHEDULER_NAME, namespace=config.cluster.namespace)
    except ValueError:
        raise FarmError("Ray is up but the farm is not; run `cameofarm up`") from None
    try:
        return dict(ray.get(scheduler.status.remote(), timeout=timeout))
    except GetTimeoutError:
        raise FarmError(f"the scheduler did not answer within {timeout:g} s") from None
    except RayActorError as exc:
        raise FarmError(f"the scheduler is not available ({type(exc).__name__})") from None


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
    for actor in _stage_replicas().values():  # every replica, also those the config dropped
        ray.kill(actor, no_restart=True)
    progress("scheduler and stage pools stopped")
    ray.shutdown()
    if _embedded(config):
        # Only this farm's head: `ray stop --force` would end every Ray cluster on the host.
        stopped = stop_head(config)
        progress(f"embedded Ray stopped ({stopped} processes)")
