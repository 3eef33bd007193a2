"""The scheduler: a control loop that reads the queues from the database, asks the policy
what to start, runs render pipelines on worker threads and records how each one ended.

It is a plain class; `cluster.bootstrap` wraps it as a detached Ray actor. Each tick survives
its own exceptions, and a crash in one job never stops the loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from cameofarm.actors.pools import ResultLostError, StageCallError, StagePools
from cameofarm.cameos import expire_lapsed
from cameofarm.cameos.audit import verify_audit
from cameofarm.cameos.purge import run_due_purges
from cameofarm.cluster.autoscale import Autoscaler, ScaleBounds, ScaleDecision
from cameofarm.cluster.jobs import (
    JobChanged,
    JobStatus,
    JobView,
    describe_running,
    dispatch_job,
    end_failed_attempt,
    ended_unpublished_since,
    finish_published,
    get_job,
    last_dispatches,
    list_jobs,
    orgs_of,
    read_queues,
    record_progress,
    requeue_interrupted,
)
from cameofarm.cluster.policy import (
    RunningJob,
    SchedulerInput,
    SchedulerOutput,
    TierLimits,
    heads_needed,
    schedule,
)
from cameofarm.cluster.webhooks import deliver_due
from cameofarm.configs import FarmConfig, StageName
from cameofarm.monitoring.collectors import (
    FARM_SOURCES,
    AuditCheck,
    FarmStateCollector,
    ReplicaWatch,
)
from cameofarm.monitoring.gpu import node_address
from cameofarm.monitoring.logs import add_log_fields, configure_process_logging, log_context
from cameofarm.monitoring.metrics import (
    JOB_RUN_SECONDS,
    POOL_RESIZES,
    PURGES_DONE,
    QUEUE_WAIT_SECONDS,
    count_voices,
    declare_scheduler_series,
    serve_metrics,
)
from cameofarm.pipelines.render import JobCancelled, RenderJob, output_key, render_job
from cameofarm.storage import FarmStorage, open_farm_storage
from cameofarm.storage.keys import caption_keys
from cameofarm.storage.objects import StorageUnavailableError

log = logging.getLogger("cameofarm.scheduler")


class Scheduler:
    """Owns dispatch for the whole farm. One instance per farm.

    Constructing one does no I/O: storage, pools, the render executor and the clock are
    given, so tests drive `tick()` with a fake executor and clock. `start()` does the rest:
    re-queue what a previous instance was running (once per instance), serve metrics, and
    run the loop and housekeeping threads. `FarmScheduler` is the Ray actor's form.
    """

    def __init__(
        self,
        config: FarmConfig,
        pools: StagePools,
        storage: FarmStorage,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        memory_budget: int | None = None,
    ) -> None:
        """`memory_budget`: the object store bytes running jobs' frames may hold (the
        farm's share of Ray's object store; None: no limit)."""
        self.config = config
        self.pools = pools
        self.storage = storage
        self.clock = clock
        from cameofarm.pipelines.streaming import job_store_bytes

        sched = config.scheduler
        self.tiers = {
            name: TierLimits(
                t.max_running,
                t.capacity_share,
                t.priority,
                job_store_bytes(t.width, t.height, sched.chunk_frames, sched.chunks_in_flight),
            )
            for name, t in config.tiers.items()
        }
        self.memory_budget = memory_budget
        self.executor = executor or ThreadPoolExecutor(
            max_workers=config.scheduler.max_running_jobs, thread_name_prefix="render"
        )
        self.futures: dict[str, Future[None]] = {}
        self.last_output = SchedulerOutput(())
        self.ticks = 0
        self.errors = 0
        self.recovered: list[str] | None = None  # set by the first start()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._swept_at = clock() - 86_400.0
        self.replica_watch = ReplicaWatch()
        self.audit_check: AuditCheck | None = None
        self.metrics_url: str | None = None
        self._due = {"replicas": float("-inf"), "audit": float("-inf")}
        # When each share (organisation) last had a job dispatched: fair share's memory, read
        # from the database (the last day) at the first tick, then kept here.
        self._served: dict[str, float] | None = None
        # Running jobs' stages, call by call: job id -> stage -> [calls answered, calls].
        self._stages: dict[str, dict[str, list[int]]] = {}
        self._stages_lock = threading.Lock()
        self.autoscaler = Autoscaler(
            {
                stage.value: ScaleBounds(pool.lowest, pool.highest)
                for stage, pool in config.pools.items()
                if pool.lowest < pool.highest
            },
            sched.scale_up_busy,
            sched.scale_down_busy,
            sched.scale_down_after_seconds,
        )

    # --- the control loop ----------------------------------------------------------------

    def recover(self) -> list[str]:
        """Re-queue the jobs a previous scheduler left RUNNING (it crashed or the farm was
        killed); only once per instance, so a second `start()` never re-queues live work."""
        if self.recovered is None:
            self.recovered = requeue_interrupted(self.storage.db, "farm restarted; running again")
            if self.recovered:
                log.warning(
                    "re-queued %d interrupted jobs: %s", len(self.recovered), self.recovered
                )
        return self.recovered

    def start(self) -> bool:
        """Recover, then start the loop thread and the housekeeping thread (idempotent)."""
        first = self.recovered is None
        self.recover()
        if first:
            self.serve_metrics()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
            self._thread.start()
            self._chores = threading.Thread(target=self._chore_loop, name="chores", daemon=True)
            self._chores.start()
            if self.autoscaler.bounds and hasattr(self.pools, "resize"):
                threading.Thread(target=self._autoscale_loop, name="autoscale", daemon=True).start()
        return True

    def serve_metrics(self) -> str | None:
        """Serve this process's metrics with this scheduler's farm state and replica health
        (monitoring.scheduler_port); return the URL, None when off or the port is taken."""
        declare_scheduler_series(self.tiers, [stage.value for stage in self.config.pools])
        state = FarmStateCollector(self.storage.db, self.config, lambda: self.audit_check)
        FARM_SOURCES.use([state, self.replica_watch])
        m = self.config.monitoring
        self.metrics_url = serve_metrics(m.host, m.scheduler_port, "scheduler")
        if self.metrics_url:
            log.info("metrics on %s", self.metrics_url)
        return self.metrics_url

    def _chore_loop(self) -> None:
        """Purges and webhook deliveries, off the dispatch path (a slow endpoint or a large
        purge never delays dispatch)."""
        while not self._stop.is_set():
            try:
                self.chores()
            except Exception:
                log.exception("housekeeping failed; continuing")
            self._stop.wait(self.config.scheduler.tick_seconds)

    def chores(self) -> dict[str, int]:
        """Run due purges, webhook deliveries and the sweep of unpublished outputs once;
        return how many of each."""
        purged = run_due_purges(self.storage, forget=self.pools.forget)
        for p in purged:
            log.info("purged cameo %s: %d objects", p.cameo_id, len(p.removed))
        PURGES_DONE.inc(len(purged))
        sent = deliver_due(self.storage.db, self.config.webhooks)
        # Lapsed verifications become EXPIRED here, once, with an audit row; may_cast refuses
        # a lapsed cameo by itself whether or not this has run yet.
        days = self.config.enrollment.verified_days
        expired = expire_lapsed(self.storage.db, days, now=self.clock())
        return {
            "purged": len(purged),
            "webhooks": sent,
            "swept": self.sweep_unpublished(),
            "expired": len(expired),
            "watched": self.watch(),
        }

    def _autoscale_loop(self) -> None:
        """Resize the pools that may change size, one step per window, off the dispatch path
        (a new replica's model load takes a while)."""
        adopted = self.pools.adopt()  # type: ignore[attr-defined]
        if adopted:
            log.info("took in replicas an earlier scheduler made: %s", adopted)
        while not self._stop.is_set():
            try:
                self.autoscale()
            except Exception:
                log.exception("autoscaling failed; trying again next window")
            self._stop.wait(self.config.scheduler.autoscale_seconds)

    def autoscale(self) -> list[ScaleDecision]:
        """One look at the scaled pools; grow or shrink those that need it by one replica."""
        decisions = self.autoscaler.observe(self.pools.health(), time.monotonic())
        for d in decisions:
            if not d.changes:
                continue
            changed = self.pools.resize(StageName(d.stage), d.target)  # type: ignore[attr-defined]
            direction = "up" if d.target > d.replicas else "down"
            POOL_RESIZES.labels(stage=d.stage, direction=direction).inc(len(changed))
            up = direction == "up"
            self.autoscaler.resized(d.stage, len(changed) if up else 0, 0 if up else len(changed))
            log.info(
                "%s pool %s to %d replicas (%s): %s",
                d.stage,
                "grown" if direction == "up" else "shrunk",
                d.target,
                d.reason,
                ", ".join(changed) or "nothing to change",
            )
        return decisions

    def watch(self) -> int:
        """When due, poll every replica's health (restarts, model loads, GPU readings) and
        verify the audit chain, for the metrics; return how many of the two ran."""
        now, m, ran = self.clock(), self.config.monitoring, 0
        if now >= self._due["replicas"]:
            self._due["replicas"] = now + m.replica_poll_seconds
            self.replica_watch.observe(self.pools.health(), now)
            ran += 1
        if now >= self._due["audit"]:
            self._due["audit"] = now + m.audit_verify_seconds
            report = verify_audit(self.storage.db)
            self.audit_check = AuditCheck(report.ok, now, report.rows)
            if not report.ok:
                log.error("the audit chain does not verify: %s", "; ".join(report.problems[:5]))
            ran += 1
        return ran

    def sweep_unpublished(self) -> int:
        """Delete the outputs of jobs that ended without being published (a crash between
        the object write and the SUCCEEDED commit leaves one); return how many went. Looks
        back a day at the first sweep, then from the previous sweep on."""
        now = self.clock()
        since = self._swept_at - 60.0  # overlap: a job may end while the sweep runs
        removed = 0
        for job_id in ended_unpublished_since(self.storage.db, since):
            key = output_key(job_id)
            for each in (key, *caption_keys(key).values()):
                if self.storage.objects.exists(each):
                    self.storage.objects.delete(each)
                    log.warning("removed %s: its job %s ended unpublished", each, job_id)
                    removed += 1
        self._swept_at = now
        return removed

    def stop(self, wait: bool = True) -> None:
        """Stop dispatching; with wait, let running jobs finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.executor.shutdown(wait=wait, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                self.errors += 1
                log.exception("scheduler tick failed; continuing")
            self._stop.wait(self.config.scheduler.tick_seconds)

    def tick(self) -> list[str]:
        """One pass: reap finished jobs, start what the policy allows; return started ids."""
        self.ticks += 1
        self.futures = {jid: f for jid, f in self.futures.items() if not f.done()}
        running = list_jobs(self.storage.db, {JobStatus.RUNNING})
        max_running = self.config.scheduler.max_running_jobs
        queues = read_queues(self.storage.db, heads_needed(self.tiers, len(running), max_running))
        orgs = orgs_of(self.storage.db, {j.customer for j in running})
        if self._served is None:
            self._served = last_dispatches(self.storage.db, self.clock() - 86_400.0)
        out = schedule(
            SchedulerInput(
                queued=queues.heads,
                running=tuple(
                    RunningJob(j.id, j.tier, j.customer, orgs.get(j.customer, "")) for j in running
                ),
                tiers=self.tiers,
                max_running_jobs=max_running,
                last_started=dict(self._served),
                memory_budget=self.memory_budget,
            )
        )
        self.last_output = out
        started = []
        for head in out.jobs:
            job_id = head.job_id
            self._served[head.share] = self.clock()  # served, even if refused now
            try:
                # Consent is checked again here; a job no longer allowed is cancelled.
                view = dispatch_job(self.storage.db, self.config, job_id)
                if view is None:
                    continue
                if view.attempts == 1 and view.started_at is not None:
                    wait = view.started_at - view.submitted_at
                    QUEUE_WAIT_SECONDS.labels(tier=view.tier).observe(max(0.0, wait))
            except Exception:
                log.exception("could not dispatch %s", job_id, extra={"job": job_id})
                continue
            log.info("dispatched", extra={"job": job_id, "tier": view.tier})
            self.futures[job_id] = self.executor.submit(self._run, job_id)
            started.append(job_id)
        return started

    # --- one job ------------------------------------------------------------------------

    def _run(self, job_id: str) -> None:
        with log_context(job=job_id):  # every record of this run names the job
            self._run_job(job_id)

    def _run_job(self, job_id: str) -> None:
        db = self.storage.db
        began = time.monotonic()
        tier, ended = "unknown", "FAILED"
        try:
            view = get_job(db, job_id)
            tier = view.tier
            add_log_fields(tier=tier)
            log.info("rendering (attempt %d)", view.attempts)
            job = RenderJob(
                view.id,
                view.tier,
                view.cameo_ids,
                view.script,
                view.background_key,
                attempt=view.attempts,
                language=view.language,
                scene_id=view.scene_id,
                prompt=view.prompt,
                audio_bed=view.audio_bed,
                captions=view.captions,
            )
            render_job(
                job,
                self.config,
                self.pools,
                self.storage,
                progress=lambda stage, frac: record_progress(db, job_id, str(stage), frac),
                still_wanted=lambda: get_job(db, job_id).status is JobStatus.RUNNING,
                finalize=lambda key, quality: self._published(job_id, tier, key, quality),
                stage_progress=lambda stage, done, total: self._note_stage(
                    job_id, stage, done, total
                ),
            )
            ended = "SUCCEEDED"
        except (JobCancelled, JobChanged) as exc:
            log.info("%s", exc)
            ended = "CANCELLED"
        except StageCallError as exc:
            log.warning("%s", exc)
            ended = self._fail_or_retry(job_id, exc, exc.retryable)
        except (StorageUnavailableError, ResultLostError) as exc:  # infrastructure, not the job
            log.warning("job %s: %s", job_id, exc)
            ended = self._fail_or_retry(job_id, exc, True)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            ended = self._fail_or_retry(job_id, exc, False)
        seconds = time.monotonic() - began
        JOB_RUN_SECONDS.labels(tier=tier, status=ended).observe(seconds)
        log.info("run ended %s after %.1f s", ended, seconds)
        with self._stages_lock:
            self._stages.pop(job_id, None)

    def _published(
        self, job_id: str, tier: str, key: str, quality: dict[str, Any] | None
    ) -> JobView:
        """Publish a rendered job (finish_published) and count its voices' verdicts."""
        view = finish_published(self.storage.db, self.config, job_id, key, quality)
        count_voices(tier, quality)
        return view

    def _note_stage(self, job_id: str, stage: str, done: int, total: int) -> None:
        with self._stages_lock:
            self._stages.setdefault(job_id, {})[stage] = [done, total]

    def _fail_or_retry(self, job_id: str, exc: Exception, retryable: bool) -> str:
        """Record a failed run; return how it ended (FAILED, REQUEUED, or CANCELLED when the
        job was cancelled meanwhile)."""
        try:
            max_attempts = self.config.scheduler.max_attempts
            ended = end_failed_attempt(self.storage.db, job_id, str(exc), retryable, max_attempts)
        except Exception:
            log.exception("could not record the end of job %s", job_id)
            return "FAILED"
        if ended is None:
            return "CANCELLED"
        return "REQUEUED" if ended is JobStatus.QUEUED else ended.value

    # --- introspection ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Pools with replica GPU ids, queue depth per tier, running jobs (with each stage's
        calls answered so far), loop health."""
        depth = read_queues(self.storage.db, 0).depth
        with self._stages_lock:
            stages = {
                job: {s: list(n) for s, n in each.items()} for job, each in self._stages.items()
            }
        return {
            "pools": self.pools.health(),
            "queues": {tier: depth.get(tier, 0) for tier in self.tiers},
            "running": describe_running(self.storage.db, self.clock(), stages),
            "waiting": dict(self.last_output.waiting),
            "ticks": self.ticks,
            "tick_errors": self.errors,
            "autoscale": self.autoscaler.report(),
            "node": node_address(),
            "pid": os.getpid(),
            "recovered": self.recovered or [],
            "metrics": self.metrics_url,
        }

    def ping(self) -> bool:
        return True


class FarmScheduler(Scheduler):
    """The scheduler as the farm's Ray actor: it opens the farm's storage where it runs and
    starts at once, because after Ray restarts it (a crash) nobody else calls `start()`."""

    def __init__(self, config: FarmConfig, pools: StagePools) -> None:
        configure_process_logging(config.monitoring.log)
        super().__init__(
            config, pools, open_farm_storage(config), memory_budget=_store_budget(config)
        )
        self.start()


def _store_budget(config: FarmConfig) -> int | None:
    """The share of the Ray cluster's object store the running jobs' frames may hold."""
    import ray

    store = ray.cluster_resources().get("object_store_memory")
    return int(store * config.scheduler.object_store_share) if store else None
