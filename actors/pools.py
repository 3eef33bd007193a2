"""The one boundary through which pipelines talk to stage actors.

`StagePools` is the interface; `RayStagePools` spreads calls over Ray actor replicas and keeps
frames in Ray's object store (handles are ObjectRefs), `LocalStagePools` runs the same actor
shells in-process for tests and single-process tools (handles are the values themselves).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from cameofarm.actors.stage import StageActor
from cameofarm.configs import StageName
from cameofarm.monitoring.timing import CallTiming


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
                raise StageCallError(stage, f"{type(exc).__name__}: {exc}", False) from exc
            outputs.append(value)
            timings.append(timing)
        return outputs, timings

    def fetch(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    def health(self) -> list[dict[str, Any]]:
        return [actor.health() for actor in self.actors.values()]

    def forget(self, keys: list[str]) -> int:
        return sum(actor.forget(keys) for actor in self.actors.values())


class RayStagePools:
    """Calls spread round-robin over each stage's Ray actor replicas."""

    def __init__(self, replicas: dict[StageName, list[Any]]) -> None:
        self.replicas = replicas
        self._lock = threading.Lock()
        self._next = {stage: itertools.count() for stage in replicas}

    def __getstate__(self) -> dict[str, Any]:
        return {"replicas": self.replicas}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["replicas"])  # type: ignore[misc]

    def _pick(self, stage: StageName) -> Any:
        with self._lock:
            n = next(self._next[stage])
        group = self.replicas[stage]
        return group[n % len(group)]

    def map(
        self, stage: StageName, method: str, calls: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], list[CallTiming]]:
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

        outputs, timing_refs = [], []
        for args in calls:
            actor = self._pick(stage)
            out, timing = getattr(actor, method).options(num_returns=2).remote(*args)
            outputs.append(out)
            timing_refs.append(timing)
        try:
            timings = ray.get(timing_refs)
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise StageCallError(stage, f"{type(cause).__name__}: {cause}", False) from exc
        except (ActorDiedError, ActorUnavailableError) as exc:
            raise StageCallError(stage, f"replica lost: {exc}", True) from exc
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
