"""The one boundary through which pipelines talk to stage actors.

`StagePools` is the interface; `RayStagePools` spreads calls over Ray actor replicas and keeps
frames in Ray's object store (handles are ObjectRefs), `LocalStagePools` runs the same actor
shells in-process for tests and single-process tools (handles are the values themselves).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from cameofarm.actors.rotation import ReplicaRotation, RotationPolicy
from cameofarm.actors.stage import Priority, StageActor
from cameofarm.configs import StageName
from cameofarm.monitoring.metrics import CALL_RETRIES, REPLICA_IN_FLIGHT, REPLICAS_DRAINED
from cameofarm.monitoring.timing import CallTiming
from cameofarm.storage.objects import StorageUnavailableError

log = logging.getLogger("cameofarm.pools")

# Told how many of a map's calls have answered so far, each time that number grows.
OnDone = Callable[[int], None]


T = TypeVar("T")


class StageCallError(RuntimeError):
    """A stage call failed. `retryable` is True when the replica died, not the input.
    `lost_input`: the call's input was lost with the node that held it (made again, by the
    steps that made it, the call can run)."""

    def __init__(
        self, stage: StageName, message: str, retryable: bool, lost_input: bool = False
    ) -> None:
        super().__init__(f"{stage.value}: {message}")
        self.stage = stage
        self.retryable = retryable
        self.lost_input = lost_input


class ResultLostError(RuntimeError):
    """A stage's result was lost with the node that held it before it was read: the job must
    run again (an infrastructure fault, not the job's)."""


class StagePools(Protocol):
    """Run a batch of calls on one stage's replicas and wait for all of them. At a replica,
    calls wait their turn by `priority` (lower first; see `StageActor.call`)."""

    def map(
        self,
        stage: StageName,
        method: str,
        calls: Sequence[tuple[Any, ...]],
        on_done: OnDone | None = None,
        priority: Priority = (),
        near: str | None = None,
    ) -> tuple[list[Any], list[CallTiming]]: ...

    def fetch(self, handles: Sequence[Any]) -> list[Any]: ...

    def elsewhere(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a process that serves no stage, its result returned (its error
        raised): CPU work beside a job (measuring it) that must hold up neither a replica's
        calls nor the caller's threads. Handles among `args` arrive as their values."""
        ...

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
    """In-process pools: one StageActor per stage, called directly from however many
    threads, one call at a time each by priority (as a Ray replica serves its calls)."""

    def __init__(self, actors: dict[StageName, StageActor]) -> None:
        self.actors = actors

    def map(
        self,
        stage: StageName,
        method: str,
        calls: Sequence[tuple[Any, ...]],
        on_done: OnDone | None = None,
        priority: Priority = (),
        near: str | None = None,
    ) -> tuple[list[Any], list[CallTiming]]:
        outputs, timings = [], []
        for args in calls:
            try:
                value, timing = self.actors[stage].call(method, priority, *args)
            except Exception as exc:
                retryable = isinstance(exc, StorageUnavailableError)
                raise StageCallError(stage, f"{type(exc).__name__}: {exc}", retryable) from exc
            outputs.append(value)
            timings.append(timing)
            if on_done is not None:
                on_done(len(outputs))
        return outputs, timings

    def fetch(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    def elsewhere(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def health(self) -> list[dict[str, Any]]:
        return [{**actor.health(), "reachable": True} for actor in self.actors.values()]

    def forget(self, keys: list[str]) -> int:
        return sum(actor.forget(keys) for actor in self.actors.values())


@dataclass(frozen=True)
class CallDeadlines:
    """How long one stage call may take before its replica counts as hung.

    Until a stage's method has been measured, a call gets `first_call_seconds` (a first call
    may load a model or fill a cache); after that, `slack` times that method's measured seconds
    per call (a moving average), never under `floor_seconds`. Methods are measured apart: a
    base-video replica generating a whole prompt scene is not held to the time of one chunk.
    A replica that died is given `first_call_seconds` to come back (restart and model load)
    before a call is retried on it.
    """

    first_call_seconds: float = 900.0
    floor_seconds: float = 60.0
    slack: float = 5.0


class ReplicaMaker(Protocol):
    """Makes a stage's replicas (`cluster.bootstrap.ReplicaMaker`): the autoscaler's hands."""

    def names(self, stage: StageName) -> list[str]: ...

    def existing(self, stage: StageName) -> dict[str, Any]: ...

    def __call__(self, stage: StageName, name: str) -> Any: ...


class RayStagePools:
    """Calls spread round-robin over each stage's Ray actor replicas, each with a deadline.

    A replica that does not answer in time is killed so that Ray restarts it; a call whose
    replica died or hung is tried again on another replica (`RotationPolicy.call_retries`), and
    each such retry is reported in the call's timing. A replica that fails repeatedly leaves
    the rotation for a while. Only when every try failed does the call fail, as retryable (the
    job is queued again).
    """

    def __init__(
        self,
        replicas: dict[StageName, dict[str, Any]],
        deadlines: CallDeadlines | None = None,
        rotation: RotationPolicy | None = None,
        maker: ReplicaMaker | None = None,
    ) -> None:
        # stage -> replica name -> actor handle. A stage's dict is replaced, never changed in
        # place, when the autoscaler resizes the pool: readers need no lock to go through it.
        self.replicas = replicas
        self.maker = maker
        self.deadlines = deadlines or CallDeadlines()
        self.policy = rotation or RotationPolicy()
        self.rotation = ReplicaRotation(self.policy)
        self._lock = threading.Lock()
        self._turn = itertools.count()
        # Moving average of seconds per call, by stage and method.
        self._cost: dict[tuple[StageName, str], float] = {}
        self._in_flight: Counter[str] = Counter()  # calls sent and not yet answered, by replica
        self._nodes: dict[str, str] = {}  # replica -> its node, from its health reports
        self._tasks: dict[Callable[..., Any], Any] = {}  # fn -> its Ray remote function

    def __getstate__(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "deadlines": self.deadlines,
            "rotation": self.policy,
            "maker": self.maker,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["replicas"], state.get("deadlines"), state.get("rotation"), state.get("maker")
        )

    def deadline(self, stage: StageName, method: str) -> float:
        """Seconds one call of this stage's method may take now."""
        cost = self._cost.get((stage, method))
        if cost is None:
            return self.deadlines.first_call_seconds
        return max(self.deadlines.floor_seconds, self.deadlines.slack * cost)

    def _learn(self, stage: StageName, method: str, timings: Sequence[CallTiming]) -> None:
        with self._lock:
            for t in timings:
                old = self._cost.get((stage, method))
                cost = t.seconds if old is None else 0.8 * old + 0.2 * t.seconds
                self._cost[(stage, method)] = cost

    def _pick(
        self, stage: StageName, avoid: frozenset[str], near: str | None = None
    ) -> tuple[str, Any]:
        with self._lock:
            group = self.replicas[stage]
            names = list(group)
            local = self._near(names, near, avoid)
            name = self.rotation.choose(local or names, next(self._turn), avoid)
            return name, group[name]

    def _near(self, names: list[str], near: str | None, avoid: frozenset[str]) -> list[str]:
        """The replicas on the node of `near` that may take a call now (none when its node is
        not known yet, or when each of them has more than one call in flight over the least
        busy replica of the stage: then the frames travel)."""
        node = self._nodes.get(near) if near else None
        if node is None:
            return []
        live = [n for n in names if n not in avoid and self.rotation.in_rotation(n)]
        if not live:
            return []
        least = min(self._in_flight[n] for n in live)
        return [n for n in live if self._nodes.get(n) == node and self._in_flight[n] <= least + 1]

    def _failed(self, stage: StageName, replica: str, reason: str) -> None:
        with self._lock:
            drained = self.rotation.failed(replica, reason)
        where = {"stage": stage.value, "replica": replica}
        if drained:
            REPLICAS_DRAINED.labels(**where).inc()
            log.warning(
                "%s replica %s out of rotation for %.0f s after %d failures in a row: %s",
                stage.value,
                replica,
                self.policy.drain_seconds,
                self.policy.failures_to_drain,
                reason,
                extra=where,
            )
        else:
            log.warning(
                "%s replica %s failed a call: %s", stage.value, replica, reason, extra=where
            )

    def _await_restart(self, actor: Any) -> bool:
        """Wait until a replica that just died answers again (Ray restarts it; loading its
        model may take as long as a first call). False if it does not within that time."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

        deadline = time.monotonic() + self.deadlines.first_call_seconds
        pause = 0.2
        while (left := deadline - time.monotonic()) > 0:
            try:
                ray.get(control(actor.health).remote(), timeout=left)
                return True
            except (ActorUnavailableError, GetTimeoutError):
                time.sleep(min(pause, max(left, 0.0)))
                pause = min(pause * 2, 5.0)
            except ActorDiedError:
                return False  # out of restarts: the call fails and says so
        return False

    def map(
        self,
        stage: StageName,
        method: str,
        calls: Sequence[tuple[Any, ...]],
        on_done: OnDone | None = None,
        priority: Priority = (),
        near: str | None = None,
    ) -> tuple[list[Any], list[CallTiming]]:
        """Run the calls on the stage's replicas. `near`: the replica that made the calls'
        input; a replica on its node is preferred, so the frames need not cross the network,
        unless it has more than one call in flight over the least busy replica."""
        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            ObjectLostError,
            RayTaskError,
        )

        outputs: list[Any] = [None] * len(calls)
        timings: list[CallTiming | None] = [None] * len(calls)
        tried: list[list[str]] = [[] for _ in calls]  # "replica: what went wrong", per call
        failed_on: list[set[str]] = [set() for _ in calls]
        answered_calls: set[int] = set()  # for on_done: a retried call counts again only once

        def count_answer(i: int) -> None:
            answered_calls.add(i)
            if on_done is not None:
                on_done(len(answered_calls))

        todo = list(range(len(calls)))
        while todo:
            sent = {}
            waited: set[str] = set()  # replicas already given their restart time this round
            for i in todo:
                name, actor = self._pick(stage, frozenset(failed_on[i]), near)
                if name in failed_on[i] and name not in waited:
                    # No other replica to try: give this one the time Ray needs to restart it
                    # (a call sent while it restarts fails at once, and would burn the tries).
                    self._await_restart(actor)  # if it never comes back, the call says so
                    waited.add(name)
                out, timing = actor.call.options(num_returns=2).remote(method, priority, *calls[i])
                sent[i] = (name, actor, out, timing)
                self._flying(stage, name, +1)
            # A replica works through its calls one at a time: its last may wait for the others.
            queued = math.ceil(len(todo) / max(1, len(self.replicas[stage])))
            timeout = self.deadline(stage, method) * max(1, queued)
            answered = self._await_answers(stage, sent, timeout, count_answer)
            # A call still waiting its turn at a busy replica (behind calls of a higher
            # priority) is not hung: only a replica that does not answer, or whose call at
            # work has run past the deadline, is.
            deadline = self.deadline(stage, method)
            while late := {i: s for i, s in sent.items() if s[3] not in answered}:
                working = {i: s for i, s in late.items() if self._working(s[1], deadline)}
                if not working:
                    break
                answered |= self._await_answers(stage, working, timeout, count_answer)
            killed: set[str] = set()
            todo = []
            for i, (name, actor, out, timing_ref) in sent.items():
                if timing_ref not in answered:
                    self._flying(stage, name, -1)
                    if name not in killed:
                        ray.kill(actor, no_restart=False)  # Ray starts it again (max_restarts)
                        killed.add(name)
                    reason, kind = f"did not answer within {timeout:.0f} s; restarted", "hung"
                else:
                    try:
                        timings[i] = ray.get(timing_ref)
                        outputs[i] = out
                        with self._lock:
                            self.rotation.succeeded(name)
                        continue
                    except (RayTaskError, ObjectLostError) as exc:
                        cause = getattr(exc, "cause", None) or exc
                        if isinstance(cause, ObjectLostError):
                            # Its input (frames another stage made) died with their node.
                            raise StageCallError(
                                stage,
                                f"its input was lost with its node ({type(cause).__name__})",
                                True,
                                lost_input=True,
                            ) from None
                        # The input's fault, or the object store's: trying another replica
                        # would not help. A store that is away makes the job run again later.
                        retryable = isinstance(cause, StorageUnavailableError)
                        raise StageCallError(
                            stage, f"{type(cause).__name__}: {cause}", retryable
                        ) from exc
                    except (ActorDiedError, ActorUnavailableError) as exc:
                        reason, kind = f"replica lost ({type(exc).__name__})", "lost"
                        answered_calls.discard(i)  # its answer was the replica's death
                self._failed(stage, name, reason)
                tried[i].append(f"{name}: {reason}")
                failed_on[i].add(name)
                if len(tried[i]) > self.policy.call_retries:
                    raise StageCallError(
                        stage,
                        f"chunk {i} failed on {len(tried[i])} tries: " + "; ".join(tried[i]),
                        True,
                    )
                CALL_RETRIES.labels(stage=stage.value, reason=kind).inc()
                todo.append(i)
        done = [
            replace(t, retried=tuple(tried[i])) if tried[i] else t
            for i, t in enumerate(timings)
            if t is not None
        ]
        self._learn(stage, method, done)
        return outputs, done

    def _await_answers(
        self,
        stage: StageName,
        sent: dict[int, tuple[str, Any, Any, Any]],
        timeout: float,
        on_answer: Callable[[int], None],
    ) -> set[Any]:
        """Wait up to `timeout` for the calls' timings; return those that came, telling
        `on_answer` each call's index as it does. Each replica's in-flight count drops as its
        calls answer (the caller drops it for the calls it gives up on)."""
        import ray

        call_of = {timing: (i, name) for i, (name, _, _, timing) in sent.items()}
        pending = set(call_of)
        answered: set[Any] = set()
        end = time.monotonic() + timeout
        while pending and (left := end - time.monotonic()) > 0:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            for ref in ready:
                pending.discard(ref)
                answered.add(ref)
                i, name = call_of[ref]
                self._flying(stage, name, -1)
                on_answer(i)
        return answered

    def _working(self, actor: Any, deadline: float) -> bool:
        """Whether a replica is alive and working through its calls: it answers on its
        control thread, and its call at work (if any) is within the deadline."""
        import ray

        try:
            report = ray.get(control(actor.health).remote(), timeout=10)
        except Exception:
            return False
        running = report.get("running_for")
        if running is None:  # between two calls: working if calls wait their turn
            return bool(report.get("waiting"))
        return bool(running < deadline)

    def _flying(self, stage: StageName, replica: str, change: int) -> None:
        with self._lock:
            self._in_flight[replica] += change
        REPLICA_IN_FLIGHT.labels(stage=stage.value, replica=replica).inc(change)

    def fetch(self, handles: Sequence[Any]) -> list[Any]:
        import ray
        from ray.exceptions import ObjectLostError

        try:
            return list(ray.get(list(handles)))
        except ObjectLostError as exc:
            raise ResultLostError(
                f"a stage's result was lost with its node ({type(exc).__name__})"
            ) from None

    def elsewhere(self, fn: Callable[..., T], *args: Any) -> T:
        """A Ray task that asks for no CPU (it is small, and a node's CPUs are the replicas'
        to declare): Ray runs it in a worker process of its own, kept for the next one."""
        import ray

        with self._lock:
            task = self._tasks.get(fn)
            if task is None:
                task = self._tasks[fn] = ray.remote(num_cpus=0, max_retries=2)(fn)
        result: T = ray.get(task.remote(*args))
        return result

    def health(self) -> list[dict[str, Any]]:
        """Every replica's own report plus its place in the rotation. A replica that does not
        answer within 10 s (dead, restarting or stuck in native code) is listed as
        unreachable instead of failing the whole report."""
        import ray

        asked = [
            (stage, name, control(actor.health).remote())
            for stage, group in self.replicas.items()
            for name, actor in group.items()
        ]
        ready, _ = ray.wait([r for *_, r in asked], num_returns=len(asked), timeout=10)
        answered = set(ready)
        report = []
        for stage, name, ref in asked:
            info: dict[str, Any] = {"stage": stage.value, "replica": name, "reachable": False}
            if ref in answered:
                try:
                    info = {**ray.get(ref), "reachable": True}
                    with self._lock:
                        self._nodes[name] = str(info.get("node"))
                except Exception as exc:
                    info["error"] = f"{type(exc).__name__}: {exc}"
            with self._lock:
                info.update(self.rotation.report(name))
                info["in_flight"] = self._in_flight[name]
            report.append(info)
        return report

    def adopt(self) -> list[str]:
        """Take in the replicas of each stage that exist but these pools do not hold (those
        an earlier scheduler's autoscaler made, before Ray restarted the scheduler)."""
        if self.maker is None:
            return []
        adopted = []
        for stage in list(self.replicas):
            with self._lock:
                group = dict(self.replicas[stage])
                found = {n: a for n, a in self.maker.existing(stage).items() if n not in group}
                self.replicas[stage] = {**group, **found}
            adopted += list(found)
        return adopted

    def resize(self, stage: StageName, target: int) -> list[str]:
        """Grow or shrink a stage's pool by one replica toward `target`; return the names of
        the replicas added or removed. A new replica takes calls once its model has loaded;
        one that goes takes no new call and ends when its calls in flight have answered."""
        import ray

        if self.maker is None:
            raise RuntimeError("these pools cannot change size: they were made without a maker")
        names = list(self.replicas[stage])
        if target > len(names):
            free = [n for n in self.maker.names(stage) if n not in names]
            if not free:
                return []
            name = free[0]
            actor = self.maker(stage, name)
            try:
                info = ray.get(
                    control(actor.health).remote(), timeout=self.deadlines.first_call_seconds
                )
            except Exception:
                ray.kill(actor, no_restart=True)
                raise
            with self._lock:
                self._nodes[name] = str(info.get("node"))
                self.replicas[stage] = {**self.replicas[stage], name: actor}
            return [name]
        if target < len(names) and len(names) > 1:
            order = self.maker.names(stage)
            name = max(names, key=lambda n: order.index(n) if n in order else len(order))
            with self._lock:
                group = dict(self.replicas[stage])
                actor = group.pop(name)
                self.replicas[stage] = group
            deadline = time.monotonic() + self.deadlines.first_call_seconds
            while self._in_flight[name] > 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            ray.kill(actor, no_restart=True)
            return [name]
        return []

    def forget(self, keys: list[str]) -> int:
        import ray

        calls = [
            control(a.forget).remote(keys)
            for group in self.replicas.values()
            for a in group.values()
        ]
        return sum(ray.get(calls, timeout=60))
