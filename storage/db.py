"""The metadata database: tables for cameos, jobs, their events and stage timings.

SQLite (WAL mode) by default; any SQLAlchemy URL (PostgreSQL via psycopg) by config.
Timestamps are UTC epoch seconds (float) so timing arithmetic needs no conversion.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

T = TypeVar("T")
log = logging.getLogger("cameofarm.db")


class Base(DeclarativeBase):
    pass


class CameoRow(Base):
    __tablename__ = "cameos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    recording_key: Mapped[str] = mapped_column(String(512))
    assets_key: Mapped[str] = mapped_column(String(512))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Who may cast it: only_me | approved | mutuals | everyone (cameos.permissions).
    permission: Mapped[str] = mapped_column(String(16), default="only_me")
    # Content rules the owner refuses for this cameo (names from the content policy).
    restrictions: Mapped[list[str]] = mapped_column(JSON, default=list)


class OrganisationRow(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class UserRow(Base):
    """A person or service account. Its id is its handle (also the cameo owner / job customer)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    disabled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored; the token is shown once, when issued."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class FollowRow(Base):
    __tablename__ = "follows"

    follower: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    followee: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class CameoGrantRow(Base):
    """A user the owner approved to cast a cameo (the allow list)."""

    __tablename__ = "cameo_grants"

    cameo_id: Mapped[str] = mapped_column(ForeignKey("cameos.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class PurgeRow(Base):
    """A deleted cameo whose objects must be removed by `deadline`."""

    __tablename__ = "purges"

    cameo_id: Mapped[str] = mapped_column(ForeignKey("cameos.id"), primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[float] = mapped_column(Float)
    deadline: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    removed: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRow(Base):
    """One append-only, hash-chained audit entry (cameos.audit)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain's newest seq and hash: appends lock this row; a truncated tail shows here."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class WebhookDeliveryRow(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)  # or the batch's id
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # PENDING|DELIVERED|FAILED
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class SchemaRow(Base):
    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class EnrollmentSessionRow(Base):
    """A liveness challenge session: what the person was asked to do, and how it ended."""

    __tablename__ = "enrollment_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    nonce: Mapped[str] = mapped_column(String(16))
    phrase: Mapped[str] = mapped_column(Text)
    challenges: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    cameo_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class UsedRecordingRow(Base):
    """Every recording ever presented to a liveness session, by content hash (replay guard)."""

    __tablename__ = "used_recordings"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)


class ProtectedLikenessRow(Base):
    """A face that must never be enrolled (e.g. on an estate's request)."""

    __tablename__ = "protected_likenesses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    # {analyzer: vector}; rows from before analyzers were named hold one bare dlib vector
    embedding: Mapped[dict[str, list[float]] | list[float]] = mapped_column(JSON)
    added_at: Mapped[float] = mapped_column(Float)


class CameoEventRow(Base):
    __tablename__ = "cameo_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cameo_id: Mapped[str] = mapped_column(ForeignKey("cameos.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    customer: Mapped[str] = mapped_column(String(200), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cameo_ids: Mapped[list[str]] = mapped_column(JSON)
    script: Mapped[str] = mapped_column(Text)
    background_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The template scene the cameo is cast into (None: the cameo presents over a background).
    scene_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A scene to generate: {"text", "framing", "emotion", "seed"} (None: no prompt scene).
    prompt: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Music or ambience under the dialogue: {"key", "level_db"} (None: speech alone).
    audio_bed: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # "sidecar": WebVTT and SRT beside the video; "burned": those, and drawn into the frames.
    captions: Mapped[str] = mapped_column(String(16), default="sidecar")
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(32), default="")
    output_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Idempotent submit: one job per (customer, client_token); request_hash spots a reuse.
    client_token: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64), default="")
    # The script's language (declared or detected at submit) and its spoken length there.
    language: Mapped[str] = mapped_column(String(16), default="en", server_default="en")
    speech_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The published output's quality report (pipelines/quality.py), written as it publishes.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    taken_down_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    taken_down_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Optimistic locking: a status change made from a stale read (say, dispatching a job that
    # a revocation just cancelled) fails instead of overwriting it.
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
    __table_args__ = (
        UniqueConstraint("customer", "client_token", name="uq_job_client_token"),
        # The scheduler reads each (tier, customer)'s queue heads in dispatch order.
        Index(
            "ix_job_queue_heads",
            status,
            tier,
            customer,
            priority.desc(),
            submitted_at,
            id,
        ),
    )


class BatchRow(Base):
    """A manifest of render requests submitted at once; its jobs are its items."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer: Mapped[str] = mapped_column(String(64), index=True)
    org_id: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(200))  # the manifest's file name
    # sha256 of the manifest's bytes: the same file submitted again is the same batch.
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)  # rows in the file
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # --skip-invalid
    cancelled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When its last open job ended (batch.completed sent); cleared when rows are retried.
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (UniqueConstraint("customer", "digest", name="uq_batch_digest"),)


class BatchItemRow(Base):
    """One row of a batch and its current job (a retried row gets a new job)."""

    __tablename__ = "batch_items"
    batch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)  # as the manifest numbers it
    output: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    earlier_jobs: Mapped[list[str]] = mapped_column(JSON, default=list)  # before retries


class SceneRow(Base):
    """A template scene: a clip of a stand-in actor whose uploader attests the rights to it;
    visible to its organisation."""

    __tablename__ = "scenes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    rights: Mapped[str] = mapped_column(Text)  # the uploader's attestation, as they wrote it
    clip_key: Mapped[str] = mapped_column(String(512))
    track_key: Mapped[str] = mapped_column(String(512))
    preview_key: Mapped[str] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int] = mapped_column(Integer)
    actors: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)


class JobEventRow(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float)


class StageTimingRow(Base):
    """One actor call of one stage of one job: the benchmark's raw material."""

    __tablename__ = "stage_timings"
    __table_args__ = (Index("ix_timing_job_stage", "job_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    tier: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32))
    chunk: Mapped[int] = mapped_column(Integer, default=0)
    replica: Mapped[str] = mapped_column(String(64))
    gpu_ids: Mapped[str] = mapped_column(String(64), default="")
    submitted_at: Mapped[float] = mapped_column(Float)  # when the pipeline asked for it
    started_at: Mapped[float] = mapped_column(Float)  # when the replica began it
    finished_at: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer, default=0)


SCHEMA_VERSION = 9  # 3: API keys expire and record who revoked them; 4: jobs' language,
# speech length and quality report; 5: template scenes (their table is created on start);
# 6: jobs' prompt scenes; 7: jobs' audio beds; 8: batches (tables created on start); 9: jobs'
# burned-in captions
# Additive steps from an older schema to the next: (version they upgrade, SQL statements).
_MIGRATIONS = {
    3: (
        "ALTER TABLE jobs ADD COLUMN language VARCHAR(16) NOT NULL DEFAULT 'en'",
        "ALTER TABLE jobs ADD COLUMN speech_seconds FLOAT",
        "ALTER TABLE jobs ADD COLUMN quality JSON",
    ),
    4: ("ALTER TABLE jobs ADD COLUMN scene_id VARCHAR(32)",),
    5: ("ALTER TABLE jobs ADD COLUMN prompt JSON",),
    6: ("ALTER TABLE jobs ADD COLUMN audio_bed JSON",),
    7: (),
    8: ("ALTER TABLE jobs ADD COLUMN captions VARCHAR(16) NOT NULL DEFAULT 'sidecar'",),
}


class SchemaMismatchError(RuntimeError):
    """The database was made by a different build of cameofarm."""


def default_sqlite_url(data_dir: str | Path) -> str:
    """Return the SQLite URL of the farm's default database file."""
    return f"sqlite:///{Path(data_dir).resolve() / 'cameofarm.db'}"


class Database:
    """An engine plus session factory; creates tables on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_schema()

    def _check_schema(self) -> None:
        with self.session() as s:
            row = s.get(SchemaRow, 1)
            if row is None:
                has_cameos = s.scalars(select(CameoRow.id).limit(1)).first() is not None
                found = 1 if has_cameos else SCHEMA_VERSION
                if found == SCHEMA_VERSION:
                    s.add(SchemaRow(id=1, version=SCHEMA_VERSION))
                    return
            else:
                found = row.version
                while found in _MIGRATIONS and found < SCHEMA_VERSION:
                    for statement in _MIGRATIONS[found]:
                        s.execute(text(statement))
                    found += 1
                    row.version = found
            if found != SCHEMA_VERSION:
                raise SchemaMismatchError(
                    f"the database {self.url} has schema version {found}; this build needs "
                    f"{SCHEMA_VERSION} and upgrades version {min(_MIGRATIONS)} and later in "
                    "place, never a newer one: use the build that made it, or back it up and start "
                    "from an empty data_dir (or point database.url at a new database)."
                )

    @classmethod
    def from_config(cls, url: str, data_dir: str | Path) -> Database:
        """Open the configured database (SQLite in data_dir when url is empty)."""
        return cls(url or default_sqlite_url(data_dir))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on any exception."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def transact(self, decide: Callable[[Session], T], attempts: int = 8) -> T:
        """Run `decide(session)` in one transaction; when another writer got in between its
        reads and its writes, run it again on a fresh read (at most `attempts` times).

        `decide` must read what it decides on inside the session it is given, so a re-run
        re-decides: a cancel that lost to a dispatch cancels the now-running job, and one
        that lost to a success raises the caller's own "already SUCCEEDED" error.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.session() as s:
                    return decide(s)
            except (StaleDataError, DBAPIError) as exc:
                if attempt == attempts or not is_write_conflict(exc):
                    raise
                log.debug("write conflict (attempt %d/%d): %s", attempt, attempts, exc)
                # Jittered backoff so two writers that collided do not collide again.
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()


# SQLite says "database is locked" when a deferred transaction that has read cannot upgrade to
# a write (WAL snapshot too old); PostgreSQL says SQLSTATE 40001 / 40P01 for a serialization
# failure or a deadlock. Either means: read again and decide again.
_CONFLICT_WORDS = ("database is locked", "could not serialize", "deadlock detected")


def is_write_conflict(exc: BaseException) -> bool:
    """True when `exc` says a concurrent writer won (retry on a fresh read)."""
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in ("40001", "40P01"):
            return True
        return any(w in str(exc.orig).lower() for w in _CONFLICT_WORDS)
    return False


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
