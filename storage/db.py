"""The metadata database: tables for cameos, jobs, their events and stage timings.

SQLite (WAL mode) by default; any SQLAlchemy URL (PostgreSQL via psycopg) by config.
Timestamps are UTC epoch seconds (float) so timing arithmetic needs no conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


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
    embedding: Mapped[list[float]] = mapped_column(JSON)
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
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(32), default="")
    output_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


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

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
