"""Batches as their customer sees them: a manifest checked as a whole and queued at once,
followed, cancelled, retried, and its results sheet."""

from __future__ import annotations

import csv
import hashlib
import io
import time
from typing import Any

from cameofarm.cameos.accounts import Principal
from cameofarm.cluster.batches import (
    RESULT_COLUMNS,
    ManifestError,
    ManifestRow,
    PlannedRow,
    RowProblem,
    UnknownBatchError,
    batch_results,
    batch_status,
    cancel_batch,
    create_batch,
    find_batch,
    list_batches,
    parse_manifest,
    retry_failed,
)
from cameofarm.cluster.jobs import JobError, job_for_token, jobs_submitted_since
from cameofarm.cluster.jobs.submit import JobPlan, plan_job
from cameofarm.service.areas.base import ApiError, BadRequest, NotFound, RateLimited
from cameofarm.service.areas.jobs import JobsArea

MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class BatchRefused(BadRequest):
    """Rows of the manifest failed their checks: `problems` lists each with its row."""

    def __init__(self, message: str, problems: list[RowProblem]) -> None:
        super().__init__(message)
        self.problems = problems


class BatchesArea(JobsArea):
    """Submitting and following batches (a batch row is a job, checked as `submit` checks
    one)."""

    def submit_batch(
        self, principal: Principal, data: bytes, filename: str, skip_invalid: bool = False
    ) -> dict[str, Any]:
        """Check every row, then queue them all (or, with `skip_invalid`, the good ones) in
        one transaction. The same file again answers with the first batch (replayed)."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise BadRequest(f"a manifest is at most {MAX_MANIFEST_BYTES // 2**20} MiB")
        digest = hashlib.sha256(data).hexdigest()
        existing = find_batch(self.db, principal.user, digest)
        if existing is not None:
            return {**batch_status(self.db, existing), "replayed": True}
        try:
            rows, problems = parse_manifest(data, filename)
        except ManifestError as exc:
            raise BadRequest(str(exc)) from None
        total = len(rows) + len(problems)  # the rows that could not even be read count too
        planned = []
        for row in rows:
            try:
                planned.append(PlannedRow(row.row, row.output, self._plan_row(principal, row)))
            except (ApiError, JobError) as exc:
                problems.append(RowProblem(row.row, str(exc)))
        problems.sort(key=lambda p: p.row)
        if problems and (not skip_invalid or not planned):
            raise BatchRefused(
                f"{len(problems)} of {total} rows fail their checks; nothing was queued (fix "
                "them, or pass --skip-invalid to queue the others)",
                problems,
            )
        self._batch_quota(principal, len(planned))
        try:
            batch_id, replayed = create_batch(
                self.db,
                self.config,
                customer=principal.user,
                org=principal.org,
                name=filename,
                digest=digest,
                total_rows=total,
                planned=planned,
                skipped=[p.to_json() for p in problems],
            )
        except JobError as exc:
            raise BadRequest(str(exc)) from None
        return {**batch_status(self.db, batch_id), "replayed": replayed}

    def _plan_row(self, principal: Principal, row: ManifestRow) -> JobPlan:
        prompt = {"text": row.prompt} if row.prompt else None
        request = self._job_request(
            principal,
            list(row.cameo_ids),
            row.script,
            tier=row.tier,
            client_token=row.client_token,
            background_id=row.background,
            language=row.language,
            scene_id=row.scene,
            prompt=prompt,
            captions=row.captions or "sidecar",
        )
        if row.client_token is not None:
            used = job_for_token(self.db, principal.user, row.client_token)
            if used is not None:
                raise BadRequest(f"client_token was already used for job {used.id}")
        return plan_job(self.db, self.config, request)

    def _batch_quota(self, principal: Principal, jobs: int) -> None:
        """A batch's jobs count against the daily job quota like single submits."""
        limit = self.config.api.jobs_per_day
        used = len(jobs_submitted_since(self.db, principal.user, time.time() - 86400))
        if used + jobs > limit:
            raise RateLimited(
                f"this batch has {jobs} jobs and the daily quota leaves {max(0, limit - used)} "
                f"of {limit}; split the manifest or ask an operator to raise api.jobs_per_day"
            )

    def _batch_call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except UnknownBatchError as exc:
            raise NotFound(str(exc)) from None

    def batch_status(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        return dict(self._batch_call(batch_status, self.db, batch_id, self._viewer(principal)))

    def list_batches(self, principal: Principal) -> dict[str, Any]:
        return {"batches": list_batches(self.db, principal.user)}

    def cancel_batch(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        viewer = self._viewer(principal)
        return dict(self._batch_call(cancel_batch, self.db, batch_id, viewer, principal.user))

    def retry_failed(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        viewer = self._viewer(principal)
        return dict(self._batch_call(retry_failed, self.db, self.config, batch_id, viewer))

    def batch_results(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        rows = self._batch_call(batch_results, self.db, batch_id, self._viewer(principal))
        return {"batch_id": batch_id, "columns": list(RESULT_COLUMNS), "rows": rows}

    @staticmethod
    def _viewer(principal: Principal) -> str | None:
        return None if principal.operator else principal.user


def results_csv(results: dict[str, Any]) -> str:
    """The results sheet as CSV text, its columns in RESULT_COLUMNS order."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=results["columns"], lineterminator="\n")
    writer.writeheader()
    for row in results["rows"]:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
