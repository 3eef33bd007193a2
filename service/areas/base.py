"""What every area of the API shares: the refusals (`ApiError`, one HTTP status each), text
checks, and `Area`, the farm's config and storage as one caller's operations see them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: the CLI imports the refusals before it knows its command
    from cameofarm.cameos.accounts import Principal
    from cameofarm.cluster.jobs import JobError
    from cameofarm.configs import FarmConfig
    from cameofarm.storage import FarmStorage


class ApiError(Exception):
    """A refused request: `status` is its HTTP status code, the message says what to do."""

    status = 400

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(ApiError):
    status = 422


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class TooLarge(ApiError):
    status = 413


class Unavailable(ApiError):
    """The farm cannot serve this now (e.g. a model its config names is missing)."""

    status = 503


class RateLimited(ApiError):
    status = 429


_JOB_KIND = {"invalid": BadRequest, "forbidden": Forbidden, "not_found": NotFound}


def job_error(exc: JobError) -> ApiError:
    if exc.kind == "conflict":
        return Conflict(str(exc))
    return _JOB_KIND.get(exc.kind, BadRequest)(str(exc))


def display_text(value: Any, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} is required")
    from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text

    if not is_display_text(value, limit):
        raise BadRequest(f"{what} must be at most {limit} characters, {DISPLAY_TEXT_RULE}")
    return value


class Area:
    """One area of the farm's operations; `FarmAPI` combines them all."""

    def __init__(self, config: FarmConfig, storage: FarmStorage) -> None:
        self.config = config
        self.storage = storage
        self.db = storage.db

    @staticmethod
    def _operator(principal: Principal) -> None:
        if not principal.operator:
            raise Forbidden("only an operator may do that")
