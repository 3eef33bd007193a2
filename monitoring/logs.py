"""The farm's logs: readable text or one JSON object per line, each record carrying the job,
tier, stage and replica it is about.

Those fields come from where the work is, not from every log call: the scheduler opens a
`log_context(job=...)` around a job's run, the stage timing hook adds the stage, and a stage
replica's process carries its stage and replica (`configure_process_logging`). A call may
also pass them itself (`extra={"replica": name}`), which wins.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO

from cameofarm.configs import LogConfig

FIELDS = ("job", "tier", "stage", "replica")

_NONE: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("cameofarm_log_fields", default=_NONE)
_process: dict[str, str] = {}  # this process's own fields (a replica's stage and name)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Records logged inside (in this thread) carry these fields."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def add_log_fields(**fields: str) -> None:
    """Add fields to the current `log_context` (they end with it), e.g. a job's tier once it
    is read."""
    _context.set({**_context.get(), **fields})


class ContextFilter(logging.Filter):
    """Gives each record the fields of its context and process (its own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                value = context.get(name) or _process.get(name)
                if value is not None:
                    setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, str]:
    return {n: str(v) for n in FIELDS if (v := getattr(record, n, None)) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, pid, the known
    fields of FIELDS, and exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [job=… stage=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        tags = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{first} [{tags}]{newline}{rest}"


def make_handler(log: LogConfig, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to `stream` (stderr) in the configured format, with the fields."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log.format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_process_logging(log: LogConfig, stream: IO[str] | None = None, **fields: str) -> None:
    """For a farm process (scheduler, replica, API replica): the `cameofarm` loggers write
    through one handler of ours at the configured level, and every record carries `fields`
    (a replica's stage and name). Calling it again replaces that handler."""
    _process.clear()
    _process.update(fields)
    logger = logging.getLogger("cameofarm")
    for old in [h for h in logger.handlers if getattr(h, "cameofarm", False)]:
        logger.removeHandler(old)
    handler = make_handler(log, stream)
    handler.cameofarm = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(log.level)
    logger.propagate = False  # Ray's own handlers would print each record a second time
