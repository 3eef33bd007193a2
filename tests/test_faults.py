"""Fault injection on a real local farm: kill -9 of a stage replica and of the scheduler while
jobs run. Nobody runs `up` afterwards; every job must still end SUCCEEDED, exactly once.
(The whole-node kill, after which `up` is run, is in test_integration.py.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_kill9_of_a_stage_replica_and_of_the_scheduler_loses_no_job(farm_config, storage, cameo):
    from cameofarm.cluster.bootstrap import farm_down
    from cameofarm.cluster.jobs import JobStatus, job_history
    from cameofarm.service.bench_faults import run_fault_drill
    from cameofarm.service.jobs_api import submit_render, wait_for_job

    lines: list[str] = []
    try:
        drill = run_fault_drill(
            farm_config,
            storage,
            cameo.id,
            kills=2,
            kinds=("stage", "scheduler"),
            in_flight=2,
            step_limit_s=600,
            settle_s=1200,
            echo=lines.append,
        )
        assert [i.kind for i in drill.injections] == ["stage", "scheduler"], lines
        assert drill.lost == [] and drill.duplicate_publishes == [], lines
        assert drill.orphan_objects == [], lines
        # Every job in flight at a kill, and every other, succeeded: none failed.
        assert dict(drill.ended) == {"SUCCEEDED": len(drill.jobs)}, drill.failures
        # The scheduler that came back re-adopted the job it was running.
        at_scheduler_kill = drill.injections[1].in_flight
        reasons = [e["reason"] for j in at_scheduler_kill for e in job_history(storage.db, j)]
        assert "farm restarted; running again" in reasons, reasons

        # And a job submitted after both kills runs as usual, with no one having run `up`.
        later = submit_render(
            farm_config, storage, [cameo.id], "After the drill.", "plus", "tester"
        )
        done = wait_for_job(storage, later.id, timeout=600)
        assert done.status is JobStatus.SUCCEEDED, done.error
    finally:
        farm_down(farm_config, progress=lambda _: None)
