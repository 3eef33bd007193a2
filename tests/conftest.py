"""Shared fixtures: a temporary farm config and storage, and a sample cameo built once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def render_published(config, storage, pools, job):
    """Dispatch a submitted job, render it through `pools` and publish it as the scheduler
    does (consent checked in the publishing transaction); return the render's result."""
    from cameofarm.cluster.jobs import dispatch_job, finish_published
    from cameofarm.pipelines.render import render_job

    assert dispatch_job(storage.db, config, job.job_id) is not None

    def finalize(key, quality):
        return finish_published(storage.db, config, job.job_id, key, quality)

    return render_job(job, config, pools, storage, finalize=finalize)


def fixture_path(name: str) -> Path:
    """Return a real-material fixture, skipping the test when ../shared/fixtures is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"real fixture {name} not present (../shared/fixtures)")
    return path


def pytest_generate_tests(metafunc):
    """Tests marked `databases` run once on SQLite and once on PostgreSQL."""
    if metafunc.definition.get_closest_marker("databases") and "database" in metafunc.fixturenames:
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database(request):
    """The farm's database URL: "" (SQLite in the data folder) or a fresh PostgreSQL database
    on the server named by CAMEOFARM_TEST_POSTGRES (`make test` starts one)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield ""
        return
    server = os.environ.get("CAMEOFARM_TEST_POSTGRES")
    if not server:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: CAMEOFARM_TEST_POSTGRES is not set")
        pytest.skip("no PostgreSQL: set CAMEOFARM_TEST_POSTGRES (`make test` starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def farm_config(tmp_path, database):
    from cameofarm.configs import load_config

    # The 8 s sample clip has ~7 s of speech: the speech minimum is lowered for speed; every
    # other enrollment check runs at its shipped threshold.
    return load_config(
        environ={
            "CAMEOFARM__DATA_DIR": str(tmp_path / "farm"),
            "CAMEOFARM__ENROLLMENT__MIN_SPEECH_SECONDS": "4",
            "CAMEOFARM__DATABASE__URL": database,
        }
    )


@pytest.fixture
def storage(farm_config):
    from cameofarm.storage import open_farm_storage

    return open_farm_storage(farm_config)


@pytest.fixture(scope="session")
def analyzer():
    from cameofarm.models.reference.face import DlibFaceAnalyzer

    return DlibFaceAnalyzer()


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory, analyzer) -> Path:
    from cameofarm.pipelines.sample_clip import build_sample_clip

    out = tmp_path_factory.mktemp("sample") / "calibration.mp4"
    return build_sample_clip(out, analyzer, seconds=8.0)


@pytest.fixture
def cameo(farm_config, storage, analyzer, sample_clip):
    from cameofarm.pipelines.enroll import enroll_recording

    # Liveness has its own tests (test_liveness.py); here the cameo is marked verified directly.
    return enroll_recording(
        storage,
        analyzer,
        sample_clip,
        name="Sample",
        owner="tester",
        checks=farm_config.enrollment,
        verified_by="test fixture",
    )


@pytest.fixture
def pools(farm_config, storage):
    """In-process stage pools: the same actor shells as the farm, without Ray."""
    from cameofarm.actors.pools import LocalStagePools
    from cameofarm.actors.stage import StageActor
    from cameofarm.configs import StageName
    from cameofarm.storage.fetch import ObjectFetcher

    fetcher = ObjectFetcher(farm_config.storage, storage.data_dir)
    return LocalStagePools(
        {
            stage: StageActor(
                stage, farm_config.pools[stage], f"{stage.value}-local", storage.keys_dir, fetcher
            )
            for stage in StageName
        }
    )


@pytest.fixture
def cameo_row(storage):
    """A VERIFIED cameo of "tester" as the job domain sees it: a database row, no media.
    For tests of jobs, consent and scheduling that never render."""
    import time
    import types

    from cameofarm.storage.db import CameoRow

    now = time.time()
    with storage.db.session() as s:
        s.add(
            CameoRow(
                id="cam_rowonly0001",
                name="Row only",
                owner="tester",
                status="VERIFIED",
                created_at=now,
                updated_at=now,
                recording_key="",
                assets_key="",
                verified_at=now,
            )
        )
    return types.SimpleNamespace(id="cam_rowonly0001")


@pytest.fixture
def moto_endpoint():
    """An S3-compatible server (moto) on loopback, for the MinIO store's tests."""
    pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Waits on the server itself, not a fixed count of tries: importing moto takes many
        # seconds on a loaded 2-core machine.
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"moto server exited with {proc.returncode} before it listened")
                if time.monotonic() > deadline:
                    pytest.fail("moto server did not listen within 180 s")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
