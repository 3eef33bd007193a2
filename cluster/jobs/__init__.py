"""The job domain: a render job's statuses and its one transition function, submission,
queries, control (cancel, progress, failed attempts) and consent on the job's way.

Import from here; the modules are its rooms:
  model       JobStatus, JobView, the errors
  transition  transition_job, the only writer of a job's status
  submit      submit_job (validation, consent, idempotent client tokens)
  queries     get_job, job_history, list_jobs, read_queues, lookups for chores and cascades
  control     set_job_status, record_progress, cancel_job, end_failed_attempt, requeue
  consent     dispatch_job, finish_published, cancel_unpermitted (may_cast applied)
"""

from cameofarm.cluster.jobs.consent import cancel_unpermitted, dispatch_job, finish_published
from cameofarm.cluster.jobs.control import (
    cancel_job,
    end_failed_attempt,
    record_progress,
    requeue_interrupted,
    set_job_status,
)
from cameofarm.cluster.jobs.model import (
    TERMINAL,
    IdempotencyConflict,
    JobChanged,
    JobError,
    JobStatus,
    JobView,
    UnknownJobError,
)
from cameofarm.cluster.jobs.queries import (
    QueueSnapshot,
    describe_running,
    ended_unpublished_since,
    get_job,
    job_history,
    jobs_submitted_since,
    jobs_using,
    last_dispatches,
    list_jobs,
    orgs_of,
    read_queues,
)
from cameofarm.cluster.jobs.submit import job_for_token, request_hash, submit_job
from cameofarm.cluster.jobs.transition import ALLOWED_MOVES, transition_job

__all__ = [
    "ALLOWED_MOVES",
    "TERMINAL",
    "IdempotencyConflict",
    "JobChanged",
    "JobError",
    "JobStatus",
    "JobView",
    "QueueSnapshot",
    "UnknownJobError",
    "cancel_job",
    "cancel_unpermitted",
    "describe_running",
    "dispatch_job",
    "end_failed_attempt",
    "ended_unpublished_since",
    "finish_published",
    "get_job",
    "job_for_token",
    "job_history",
    "jobs_submitted_since",
    "jobs_using",
    "last_dispatches",
    "list_jobs",
    "orgs_of",
    "read_queues",
    "record_progress",
    "request_hash",
    "requeue_interrupted",
    "set_job_status",
    "submit_job",
    "transition_job",
]
