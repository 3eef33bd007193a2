"""The farm's operations as one authenticated caller sees them.

Every HTTP route (`service.http`) and every CLI command in embedded mode calls exactly one
method here with the authenticated `Principal`. Methods answer plain JSON-ready dicts and
raise `ApiError` subclasses whose `status` is the HTTP status code, so both front ends say
the same thing for the same mistake.

The operations live by area in `service.areas` (accounts, cameos, enrollment, jobs,
batches, scenes, audit, farm); `FarmAPI` is all of them over one farm's config and storage. A
new area (models) is a new module there and one more base here.

Visibility rule: a job is visible to its customer and to the owners of the cameos it casts;
to anyone else it does not exist (404, never 403). A cameo's settings are visible only to its
owner (and operators).
"""

from __future__ import annotations

from typing import Any

from cameofarm.cluster.jobs import TERMINAL, JobStatus
from cameofarm.service.areas.accounts import AccountsArea
from cameofarm.service.areas.audit import AuditArea
from cameofarm.service.areas.base import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
)
from cameofarm.service.areas.batches import BatchesArea
from cameofarm.service.areas.cameos import CameosArea
from cameofarm.service.areas.enrollment import EnrollmentArea
from cameofarm.service.areas.farm import FarmArea
from cameofarm.service.areas.jobs import JobsArea
from cameofarm.service.areas.scenes import ScenesArea

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "FarmAPI",
    "Forbidden",
    "Gone",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "job_is_over",
]


class FarmAPI(
    AccountsArea,
    CameosArea,
    EnrollmentArea,
    BatchesArea,
    JobsArea,
    ScenesArea,
    AuditArea,
    FarmArea,
):
    """Operations on one farm's storage, each checked against the caller."""


def job_is_over(job: dict[str, Any]) -> bool:
    return JobStatus(job["status"]) in TERMINAL
