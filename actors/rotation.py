"""Which replicas of a stage take calls: a replica that keeps failing is taken out of rotation
for a while, then tried again on probation. Pure logic (no Ray), driven by a clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RotationPolicy:
    """When a failing replica leaves the rotation, for how long, and how often one call is
    tried again on another replica."""

    failures_to_drain: int = 3  # consecutive failed calls that take a replica out
    drain_seconds: float = 300.0  # how long it stays out before it is tried again
    call_retries: int = 2  # extra replicas one call may be tried on before the job is re-queued


@dataclass
class _Replica:
    failures: int = 0  # consecutive, reset by a success
    total_failures: int = 0
    out_until: float | None = None
    last_failure: str = ""


@dataclass
class ReplicaRotation:
    """Failure counts per replica and the choice of the next replica for a call."""

    policy: RotationPolicy = field(default_factory=RotationPolicy)
    clock: Callable[[], float] = time.monotonic
    _state: dict[str, _Replica] = field(default_factory=dict)

    def _get(self, replica: str) -> _Replica:
        return self._state.setdefault(replica, _Replica())

    def in_rotation(self, replica: str) -> bool:
        state = self._state.get(replica)
        if state is None or state.out_until is None:
            return True
        if self.clock() >= state.out_until:
            # Back on probation: one more failure takes it out again at once.
            state.out_until = None
            state.failures = self.policy.failures_to_drain - 1
            return True
        return False

    def failed(self, replica: str, reason: str) -> bool:
        """Count a failed call; return True when this failure took the replica out."""
        state = self._get(replica)
        state.failures += 1
        state.total_failures += 1
        state.last_failure = reason
        if state.out_until is None and state.failures >= self.policy.failures_to_drain:
            state.out_until = self.clock() + self.policy.drain_seconds
            return True
        return False

    def succeeded(self, replica: str) -> None:
        state = self._state.get(replica)
        if state is not None:
            state.failures = 0

    def choose(self, replicas: Sequence[str], turn: int, avoid: frozenset[str]) -> str:
        """The replica for a call: round-robin over those in rotation and not in `avoid` (the
        ones this call already failed on). With none left, one in rotation; with none in
        rotation at all, the one that comes back soonest (a stage never stops entirely)."""
        if not replicas:
            raise ValueError("a stage with no replicas cannot take calls")
        live = [r for r in replicas if self.in_rotation(r)]
        fresh = [r for r in live if r not in avoid]
        if fresh:
            return fresh[turn % len(fresh)]
        if live:
            return live[turn % len(live)]
        return min(replicas, key=lambda r: self._get(r).out_until or 0.0)

    def report(self, replica: str) -> dict[str, Any]:
        """What `cameofarm status` shows for a replica's place in the rotation."""
        state = self._state.get(replica, _Replica())
        live = self.in_rotation(replica)
        return {
            "in_rotation": live,
            "back_in_s": 0.0 if live else round((state.out_until or 0.0) - self.clock(), 1),
            "failures": state.failures,
            "total_failures": state.total_failures,
            "last_failure": state.last_failure,
        }
