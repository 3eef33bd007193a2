"""`cameofarm bench cancels`: submit→cancel pairs through the HTTP API of a running farm.

Each pair submits a job and cancels it at once, as a user who changed their mind would,
while the scheduler dispatches and renders. A cancel may only be refused when the job had
really ended already; every job must end (CANCELLED, or SUCCEEDED if it finished first) and
none whose cancel was accepted may be published. 429 answers are waited out (Retry-After),
as a well-behaved client does, and counted.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CancelDrill:
    pairs: int = 0
    cancel_codes: Counter[int] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)  # cancel answered other than 200 / 409-ended
    ended: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    published_after_cancel: list[str] = field(default_factory=list)
    waited_429: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.refused or self.stuck or self.published_after_cancel)


def _call(http: Any, drill: CancelDrill, method: str, path: str, **kwargs: Any) -> Any:
    """One request, waiting out rate limits (bounded)."""
    for _ in range(60):
        response = http.request(method, path, **kwargs)
        if response.status_code != 429:
            return response
        drill.waited_429 += 1
        time.sleep(min(30.0, float(response.headers.get("Retry-After", "1"))))
    return response


def run_cancel_drill(
    api_url: str,
    api_key: str,
    cameo_id: str,
    pairs: int,
    tier: str = "plus",
    settle_seconds: float = 900.0,
    echo: Callable[[str], None] = print,
) -> CancelDrill:
    """Run `pairs` submit→cancel pairs, wait for every job to end, and report."""
    import httpx

    drill = CancelDrill(pairs=pairs)
    started = time.monotonic()
    accepted: set[str] = set()
    jobs: list[str] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=60) as http:
        run = uuid.uuid4().hex[:8]
        for i in range(pairs):
            body = {
                "cameo_ids": [cameo_id],
                "script": f"Cancel drill take {i}.",
                "tier": tier,
                "client_token": f"cancel-drill-{run}-{i}",
            }
            submitted = _call(http, drill, "POST", "/v1/jobs", json=body)
            if submitted.status_code not in (200, 201):
                raise RuntimeError(
                    f"submit {i} answered {submitted.status_code}: {submitted.text[:300]}"
                )
            job_id = submitted.json()["id"]
            jobs.append(job_id)
            cancel = _call(http, drill, "POST", f"/v1/jobs/{job_id}/cancel")
            drill.cancel_codes[cancel.status_code] += 1
            if cancel.status_code == 200:
                accepted.add(job_id)
            elif not (cancel.status_code == 409 and "already SUCCEEDED" in cancel.text):
                drill.refused.append(f"{job_id}: {cancel.status_code} {cancel.text[:200]}")
            if (i + 1) % 25 == 0:
                echo(f"  {i + 1}/{pairs} pairs sent")
        echo("waiting for every job to end...")
        deadline = time.monotonic() + settle_seconds
        pending = list(jobs)
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                job = _call(http, drill, "GET", f"/v1/jobs/{job_id}").json()
                if job["status"] in ("QUEUED", "RUNNING"):
                    still.append(job_id)
                    continue
                drill.ended[job["status"]] += 1
                if job_id in accepted and (job["status"] == "SUCCEEDED" or job["published"]):
                    drill.published_after_cancel.append(job_id)
            pending = still
            if pending:
                time.sleep(1.0)
        drill.stuck = pending
    drill.seconds = time.monotonic() - started
    return drill


def report(drill: CancelDrill, echo: Callable[[str], None] = print) -> None:
    """Print the drill's figures, one per line."""
    codes = ", ".join(f"{code}×{n}" for code, n in sorted(drill.cancel_codes.items()))
    echo(f"pairs: {drill.pairs} in {drill.seconds:.0f} s (rate-limit waits: {drill.waited_429})")
    echo(f"cancel answers: {codes}")
    echo(f"refused with a conflict: {len(drill.refused)}")
    for line in drill.refused[:10]:
        echo(f"  {line}")
    echo("ended: " + ", ".join(f"{s} {n}" for s, n in sorted(drill.ended.items())))
    echo(f"stuck (not ended): {len(drill.stuck)}")
    echo(f"published although the cancel was accepted: {len(drill.published_after_cancel)}")
    echo("result: " + ("ok" if drill.ok else "FAILED"))
