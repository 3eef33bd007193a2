"""The one boundary through which pipelines talk to stage actors.

`StagePools` is the interface; `RayStagePools` spreads calls over Ray actor replicas and keeps
frames in Ray's object store (handles are ObjectRefs), `LocalStagePools` runs the same actor
shells in-process for tests and single-process tools (handles are the values themselves).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cameofarm.actors.stage import StageActor
from cameofarm.configs import StageName
from cameofarm.monitoring.timing import CallTiming
from cameofarm.storage.objects import StorageUnavailableError


class StageCallError(RuntimeError):
    """A stage call failed. `retryable` is True when the replica died, not the input."""

    def __init__(self, stage: StageName, message: str, retryable: bool) -> None:
        super().__init__(f"{stage.value}: {message}")
        self.stage = stage
        self.retryable = retryable


class StagePools(Protocol):
    """Run a batch of calls on one stage's replicas and wait for all of them."""

    def map(
        self, stage: StageName, method: str, calls: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], list[CallTiming]]: ...

    def fetch(self, handles: Sequence[Any]) -> list[Any]: ...

    def health(self) -> list[dict[str, Any]]: ...

    def forget(self, keys: list[str]) -> int:
        """Make every replica drop cached assets under these keys; return entries dropped."""
        ...


# Each stage replica has a "control" concurrency group of its own thread: health and forget
# answer at once while the default group works through chunk calls.
CONTROL_GROUP = "control"
CONCURRENCY_GROUPS = {CONTROL_GROUP: 1}


def control(method: Any) -> Any:
    """The actor method, called on the replica's control thread."""
    return method.options(concurrency_group=CONTROL_GROUP)


class LocalStagePools:
    """In-process pools: one StageActor per stage, called directly."""

    def __init__(self, actors: dict[StageName, StageActor]) -> None:
        self.actors = actors

    def map(
        self, stage: StageName, method: str, calls: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], list[CallTiming]]:
        outputs, timings = [], []
        for args in calls:
            try:
                value, timing = getattr(self.actors[stage], method)(*args)
            except Exception as exc:
                retryable = isinstance(exc, StorageUnavailableError)
                raise StageCallError(stage, f"{type(exc).__name__}: {exc}", retryable) from exc
            outputs.append(value)
            timings.append(timing)
        return outputs, timings

    def fetch(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    def health(self) -> list[dict[str, Any]]:
        return [actor.health() for actor in self.actors.values()]

    def forget(self, keys: list[str]) -> int:
        return sum(actor.forget(keys) for actor in self.actors.values())


@dataclass(frozen=True)
class CallDeadlines:
    """How long one stage call may take before its replica counts as hung.

    Until a stage has been measured, a call gets `first_call_seconds` (a first call may load
    a model or fill a cache); after that, `slack` times the stage's measured seconds per call
    (a moving average), never under `floor_seconds`.
    """

    first_call_seconds: float = 900.0
    floor_seconds: float = 60.0
    slack: float = 5.0


class RayStagePools:
    """Calls spread round-robin over each stage's Ray actor replicas, each with a deadline:
    a replica that does not answer in time is killed so that Ray restarts it, and the call
    fails as retryable (the job is queued again)."""

    def __init__(
        self, replicas: dict[StageName, list[Any]], deadlines: CallDeadlines | None = None
    ) -> None:
        self.replicas = replicas
        self.deadlines = deadlines or CallDeadlines()
        self._lock = threading.Lock()
        self._next = {stage: itertools.count() for stage in replicas}
        self._cost: dict[StageName, float] = {}  # moving average of seconds per call

    def __getstate__(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "deadlines": self.deadlines}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["replicas"], state.get("deadlines"))  # type: ignore[misc]

    def deadline(self, stage: StageName) -> float:
        """Seconds one call of this stage may take now."""
        cost = self._cost.get(stage)
        if cost is None:
            return self.deadlines.first_call_seconds
        return max(self.deadlines.floor_seconds, self.deadlines.slack * cost)

    def _learn(self, stage: StageName, timings: Sequence[CallTiming]) -> None:
        for t in timings:
            old = self._cost.get(stage)
            self._cost[stage] = t.seconds if old is None else 0.8 * old + 0.2 * t.seconds

    def _pick(self, stage: StageName) -> Any:
        with self._lock:
            n = next(self._next[stage])
        group = self.replicas[stage]
        return group[n % len(group)]

    def map(
        self, stage: StageName, method: str, calls: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], list[CallTiming]]:
        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            RayTaskError,
        )

        outputs, timing_refs, actors = [], [], []
        for args in calls:
            actor = self._pick(stage)
            out, timing = getattr(actor, method).options(num_returns=2).remote(*args)
            outputs.append(out)
            timing_refs.append(timing)
            actors.append(actor)
        # A replica works through its calls one at a time: its last may wait for the others.
        queued = math.ceil(len(calls) / max(1, len(self.replicas[stage])))
        timeout = self.deadline(stage) * max(1, queued)
        try:
            timings = ray.get(timing_refs, timeout=timeout)
        except GetTimeoutError:
            ready, _ = ray.wait(timing_refs, num_returns=len(timing_refs), timeout=0)
            hung = {
                id(a): a for a, ref in zip(actors, timing_refs, strict=True) if ref not in ready
            }
            for actor in hung.values():
                ray.kill(actor, no_restart=False)  # Ray starts it again (max_restarts)
            raise StageCallError(
                stage,
                f"{len(hung)} replica(s) did not answer within {timeout:.0f} s and were restarted",
                True,
            ) from None
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            # An object store that is away is an infrastructure fault: the job runs again.
            retryable = isinstance(cause, StorageUnavailableError)
            raise StageCallError(stage, f"{type(cause).__name__}: {cause}", retryable) from exc
        except (ActorDiedError, ActorUnavailableError) as exc:
            raise StageCallError(stage, f"replica lost: {exc}", True) from exc
        self._learn(stage, timings)
        return outputs, timings

    def fetch(self, handles: Sequence[Any]) -> list[Any]:
        import ray

        return list(ray.get(list(handles)))

    def health(self) -> list[dict[str, Any]]:
        import ray

        calls = [control(a.health).remote() for group in self.replicas.values() for a in group]
        return list(ray.get(calls, timeout=30))

    def forget(self, keys: list[str]) -> int:
        import ray

        calls = [control(a.forget).remote(keys) for group in self.replicas.values() for a in group]
        return sum(ray.get(calls, timeout=60))
