"""The farm's own pool autoscaler: how many replicas each stage pool should have, from its
replicas' health reports. Pure logic, no Ray; the scheduler samples and acts on it.

Why the farm's own controller and not Ray's autoscaler: Ray's autoscaler (and KubeRay's)
adds and removes *nodes* for resource demand it sees; it never makes or ends actors. The
stage replicas are the farm's named actors, so the farm decides how many there are, and a
replica Ray cannot place (no GPU share left) is the demand that makes Ray's autoscaler add a
node where one is configured.

Signals, per stage, over the last window (`scheduler.autoscale_seconds`):
- busy ratio: the share of its replicas' time spent working on calls (the rise of their
  `busy_seconds`), over the replicas seen at both ends of the window;
- queue depth: the calls waiting their turn at its replicas right now.
A pool at least `scale_up_busy` busy with calls waiting grows by one replica, up to
`max_replicas`. One at most `scale_down_busy` busy with nothing waiting, for
`scale_down_after_seconds` on end, shrinks by one, down to `min_replicas`. One step per window:
a new replica's first window shows whether it was enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScaleBounds:
    lowest: int
    highest: int


@dataclass(frozen=True)
class ScaleDecision:
    stage: str
    replicas: int  # now
    target: int
    busy: float  # share of the window the replicas worked
    waiting: int  # calls waiting at the replicas
    reason: str

    @property
    def changes(self) -> bool:
        return self.target != self.replicas


@dataclass
class Autoscaler:
    bounds: Mapping[str, ScaleBounds]  # only the pools that may change size
    scale_up_busy: float
    scale_down_busy: float
    scale_down_after: float
    _last: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    _idle_since: dict[str, float] = field(default_factory=dict)
    last: dict[str, ScaleDecision] = field(default_factory=dict)
    grown: dict[str, int] = field(default_factory=dict)  # replicas added, by stage
    shrunk: dict[str, int] = field(default_factory=dict)  # replicas removed, by stage

    def resized(self, stage: str, added: int, removed: int) -> None:
        """Count what the pools did about a decision."""
        self.grown[stage] = self.grown.get(stage, 0) + added
        self.shrunk[stage] = self.shrunk.get(stage, 0) + removed

    def observe(self, health: Iterable[Mapping[str, Any]], now: float) -> list[ScaleDecision]:
        """One look at every scaled pool; the first look only starts its window."""
        by_stage: dict[str, list[Mapping[str, Any]]] = {stage: [] for stage in self.bounds}
        for report in health:
            if report.get("stage") in by_stage:
                by_stage[report["stage"]].append(report)
        decisions = []
        for stage, reports in by_stage.items():
            decision = self._decide(stage, reports, now)
            if decision is not None:
                self.last[stage] = decision
                decisions.append(decision)
        return decisions

    def _decide(
        self, stage: str, reports: list[Mapping[str, Any]], now: float
    ) -> ScaleDecision | None:
        busy_now = {
            str(r["replica"]): float(r.get("busy_seconds", 0.0))
            for r in reports
            if r.get("reachable", True)
        }
        waiting = sum(int(r.get("waiting", 0)) for r in reports if r.get("reachable", True))
        before = self._last.get(stage)
        self._last[stage] = (now, busy_now)
        if before is None or now <= before[0]:
            return None
        then, busy_then = before
        both = [name for name in busy_now if name in busy_then]
        if not both:
            return None
        # A replica Ray restarted starts its count again: it worked at least its new count.
        worked = sum(
            busy_now[n] - busy_then[n] if busy_now[n] >= busy_then[n] else busy_now[n] for n in both
        )
        busy = min(1.0, worked / ((now - then) * len(both)))
        replicas = len(reports)
        bounds = self.bounds[stage]

        def decision(target: int, reason: str) -> ScaleDecision:
            return ScaleDecision(stage, replicas, target, round(busy, 3), waiting, reason)

        if busy >= self.scale_up_busy and waiting > 0:
            self._idle_since.pop(stage, None)
            if replicas < bounds.highest:
                return decision(replicas + 1, f"busy {busy:.0%} with {waiting} calls waiting")
            return decision(replicas, f"busy {busy:.0%}, at max_replicas {bounds.highest}")
        if busy <= self.scale_down_busy and waiting == 0:
            since = self._idle_since.setdefault(stage, then)
            if now - since >= self.scale_down_after and replicas > bounds.lowest:
                self._idle_since[stage] = now  # the next step waits a full period again
                return decision(replicas - 1, f"busy {busy:.0%} for {now - since:.0f} s")
            return decision(replicas, f"busy {busy:.0%}")
        self._idle_since.pop(stage, None)
        return decision(replicas, f"busy {busy:.0%}, {waiting} waiting")

    def report(self) -> dict[str, dict[str, Any]]:
        """The last decision per scaled pool, for `cameofarm status`."""
        return {
            stage: {
                "lowest": self.bounds[stage].lowest,
                "highest": self.bounds[stage].highest,
                "grown": self.grown.get(stage, 0),
                "shrunk": self.shrunk.get(stage, 0),
                **({} if d is None else {"busy": d.busy, "waiting": d.waiting, "last": d.reason}),
            }
            for stage in self.bounds
            for d in [self.last.get(stage)]
        }
