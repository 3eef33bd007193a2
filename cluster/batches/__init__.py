"""Batches: a manifest of render requests checked as a whole, queued at once, followed,
cancelled, retried and reported as a results sheet.

  manifest    parse a CSV / JSONL manifest and fill script templates (pure)
  store       store a checked batch with its jobs in one transaction; status, cancel,
              retry of failed rows, the results sheet
"""

from cameofarm.cluster.batches.manifest import (
    ManifestError,
    ManifestRow,
    RowProblem,
    parse_manifest,
)
from cameofarm.cluster.batches.store import (
    RESULT_COLUMNS,
    PlannedRow,
    UnknownBatchError,
    batch_results,
    batch_status,
    cancel_batch,
    create_batch,
    find_batch,
    list_batches,
    retry_failed,
)

__all__ = [
    "RESULT_COLUMNS",
    "ManifestError",
    "ManifestRow",
    "PlannedRow",
    "RowProblem",
    "UnknownBatchError",
    "batch_results",
    "batch_status",
    "cancel_batch",
    "create_batch",
    "find_batch",
    "list_batches",
    "parse_manifest",
    "retry_failed",
]
