"""The one timing hook every stage runs inside: a benchmark row, a Prometheus sample and a
log record that names the stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from cameofarm.monitoring.logs import log_context
from cameofarm.monitoring.metrics import (
    REPLICA_BUSY_SECONDS,
    STAGE_CALL_SECONDS,
    STAGE_FRAME_SECONDS,
    STAGE_SECONDS,
)
from cameofarm.storage.db import Database, JobEventRow, StageTimingRow

T = TypeVar("T")
log = logging.getLogger("cameofarm.stages")


@dataclass(frozen=True)
class CallTiming:
    """How one actor call went: who ran it, on which GPU, when, over how many frames, and
    the replicas it failed on before ("replica: what went wrong"), if any. The pipeline adds
    when it asked for the call and which chunk of the job it was (-1: work before the chunks,
    such as generating a prompt's scene; 0 and None: not said, and the stage's start and the
    call's place among the stage's calls stand in)."""

    replica: str
    gpu_ids: str
    started_at: float
    finished_at: float
    frames: int
    retried: tuple[str, ...] = ()
    submitted_at: float = 0.0
    chunk: int | None = None

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


def timed_call(
    replica: str, gpu_ids: str, fn: Callable[[], T], frames: Callable[[T], int]
) -> tuple[T, CallTiming]:
    """Run fn and return its result with a CallTiming (used inside actors)."""
    started = time.time()
    result = fn()
    return result, CallTiming(replica, gpu_ids, started, time.time(), frames(result))


@dataclass(frozen=True)
class StageTiming:
    """A stage of one job: its wall time (first call start to last call end) and calls."""

    job_id: str
    tier: str
    stage: str
    started_at: float
    finished_at: float
    calls: tuple[CallTiming, ...]

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


class StageRecorder:
    """Writes one stage_timings row per actor call and observes the stage histograms
    (labelled with the stage's backend, from `backends`, stage name to backend name)."""

    def __init__(
        self, db: Database, attempt: int = 1, backends: Mapping[str, str] | None = None
    ) -> None:
        self.db = db
        self.attempt = attempt
        self.backends = dict(backends or {})

    def record(
        self,
        job_id: str,
        tier: str,
        stage: str,
        calls: Sequence[CallTiming],
        started_at: float,
        finished_at: float,
    ) -> StageTiming:
        """Persist the calls of one stage and return the stage's timing.

        started_at is when the pipeline entered the stage and submitted its calls (a call that
        says when it was submitted keeps its own time): time a call then spends waiting for a
        busy replica is part of the stage, not pipeline overhead.
        """
        with self.db.session() as s:
            for n, call in enumerate(calls):
                chunk = call.chunk if call.chunk is not None else n
                s.add(
                    StageTimingRow(
                        job_id=job_id,
                        attempt=self.attempt,
                        tier=tier,
                        stage=stage,
                        chunk=chunk,
                        replica=call.replica,
                        gpu_ids=call.gpu_ids,
                        submitted_at=call.submitted_at or started_at,
                        started_at=call.started_at,
                        finished_at=call.finished_at,
                        seconds=call.seconds,
                        frames=call.frames,
                    )
                )
                for failure in call.retried:  # the job's history keeps every try and its reason
                    s.add(
                        JobEventRow(
                            job_id=job_id,
                            from_status="RUNNING",
                            to_status="RUNNING",
                            reason=f"{stage} chunk {chunk} tried again on {call.replica}: "
                            f"{failure}",
                            at=call.started_at,
                        )
                    )
        observe_stage(tier, stage, self.backends.get(stage, ""), calls, finished_at - started_at)
        return StageTiming(job_id, tier, stage, started_at, finished_at, tuple(calls))

    def record_calls(
        self, job_id: str, tier: str, stage: str, calls: Sequence[CallTiming]
    ) -> StageTiming | None:
        """Persist a stage's calls that each say when they were asked for (chunks streaming
        through the stages): the stage's wall runs from its first call asked to its last
        answered. Logs the stage like `stage` does; None when it made no calls."""
        if not calls:
            return None
        started = min(c.submitted_at or c.started_at for c in calls)
        finished = max(c.finished_at for c in calls)
        with log_context(stage=stage):
            timing = self.record(job_id, tier, stage, calls, started, finished)
            self._log(calls, started, finished)
        return timing

    @staticmethod
    def _log(calls: Sequence[CallTiming], started: float, finished: float) -> None:
        replicas = sorted({c.replica for c in calls})
        log.info("%d calls in %.2f s on %s", len(calls), finished - started, ", ".join(replicas))

    @contextmanager
    def stage(self, job_id: str, tier: str, stage: str) -> Iterator[list[CallTiming]]:
        """Time a stage: the body appends each call's CallTiming to the yielded list. Records
        logged inside carry the stage."""
        calls: list[CallTiming] = []
        with log_context(stage=stage):
            started = time.time()
            yield calls
            finished = time.time()
            if calls:  # from submitting the calls to the last one returning
                finished = max(finished, max(c.finished_at for c in calls))
            self.record(job_id, tier, stage, calls, started, finished)
            self._log(calls, started, finished)


def observe_stage(
    tier: str, stage: str, backend: str, calls: Sequence[CallTiming], seconds: float
) -> None:
    """The stage's Prometheus samples: its wall time, each call's time and per-frame cost,
    and the replica time each call took."""
    labels = {"tier": tier, "stage": stage, "backend": backend}
    for call in calls:
        STAGE_CALL_SECONDS.labels(**labels).observe(call.seconds)
        if call.frames > 0:
            STAGE_FRAME_SECONDS.labels(**labels).observe(call.seconds / call.frames)
        REPLICA_BUSY_SECONDS.labels(stage=stage, replica=call.replica).inc(max(0.0, call.seconds))
    STAGE_SECONDS.labels(**labels).observe(seconds)


def frames_of(result: Any) -> int:
    """Count frames in a stage result (chunks have len(); other results count as 0)."""
    try:
        return len(result)
    except TypeError:
        return 0
