"""The farm as its operators watch it (`cameofarm top`, `GET /v1/farm`)."""

from __future__ import annotations

import time
from typing import Any

from cameofarm.cameos.accounts import Principal
from cameofarm.cluster.bootstrap import FarmError, farm_status
from cameofarm.cluster.jobs import describe_running
from cameofarm.monitoring.live import read_tiers
from cameofarm.service.areas.base import Area, BadRequest

# A live view refreshes every second or two: a scheduler slower than this is reported as
# such instead of freezing the view.
SCHEDULER_ANSWER_SECONDS = 5.0


class FarmArea(Area):
    """One snapshot of tiers, pools, replicas and running jobs, for operators."""

    def farm_view(self, principal: Principal, window_s: float = 300.0) -> dict[str, Any]:
        """Tiers (queues now, throughput and waits over the last `window_s` seconds) from the
        database; pools, replicas and each running job's stages from the scheduler. When the
        scheduler does not answer, `scheduler_error` says why and running jobs come from the
        database (their current stage, no per-stage counts)."""
        self._operator(principal)
        if not 10 <= window_s <= 86_400:
            raise BadRequest("window_s must be between 10 s and 86400 s (a day)")
        now = time.time()
        view: dict[str, Any] = {
            "at": now,
            "window_s": window_s,
            "tiers": read_tiers(self.db, self.config, now, window_s),
            "scheduler": None,
            "scheduler_error": None,
            "pools": [],
            "waiting": {},
        }
        try:
            status = farm_status(self.config, timeout=SCHEDULER_ANSWER_SECONDS)
        except FarmError as exc:
            view["scheduler_error"] = str(exc)
            view["running"] = describe_running(self.db, now)
            return view
        view["scheduler"] = {
            k: status.get(k) for k in ("pid", "ticks", "tick_errors", "metrics", "recovered")
        }
        view["pools"] = status["pools"]
        view["waiting"] = status["waiting"]
        view["running"] = status["running"]
        return view
