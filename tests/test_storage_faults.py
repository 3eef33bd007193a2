"""The object store's server goes away, freezes, comes back: operations time out, are retried
with backoff, and either succeed when it returns or fail with a clear, retryable error."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest


class FaultyLink:
    """A TCP proxy in front of the S3 server that can be cut ("down": connections refused),
    frozen ("frozen": accepted, never answered) or healthy ("up")."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "up"
        self.connections = 0
        self.changed = threading.Condition()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.connections += 1
                self.changed.notify_all()
                mode = self.mode
            if mode == "down":
                client.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                client.close()  # reset: as a server that is not there
            elif mode == "frozen":
                self.held.append(client)  # never answered
            else:
                threading.Thread(target=self._pipe_both, args=(client,), daemon=True).start()

    def _pipe_both(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def wait_for_connections(self, n: int, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.connections >= n, timeout), self.connections

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.held:
            s.close()


@pytest.fixture
def link(moto_endpoint):
    """The S3 server (moto, loopback) behind a link the test can cut or freeze."""
    host, port = moto_endpoint.split(":")
    proxy = FaultyLink((host, int(port)))
    yield proxy
    proxy.close()


def _store(link, monkeypatch, **kw):
    from cameofarm.storage import MinioObjectStore

    return MinioObjectStore(
        f"127.0.0.1:{link.port}", "faults", "testing", "testing", region="us-east-1", **kw
    )


def test_an_outage_is_ridden_out_and_the_write_lands_once(link, monkeypatch):
    store = _store(link, monkeypatch, timeout_seconds=2, retry_seconds=120)
    store.put_bytes("outputs/a.mp4", b"first")
    link.mode = "down"
    seen = link.connections
    result: dict[str, object] = {}

    def write() -> None:
        try:
            result["key"] = store.put_bytes("outputs/b.mp4", b"second")
        except BaseException as exc:
            result["error"] = exc

    writer = threading.Thread(target=write)
    writer.start()
    link.wait_for_connections(seen + 3)  # refused, retried, refused again...
    link.mode = "up"  # the server is back
    writer.join(120)
    assert result == {"key": "outputs/b.mp4"}
    assert store.get_bytes("outputs/b.mp4") == b"second"
    assert sorted(store.list("outputs/")) == ["outputs/a.mp4", "outputs/b.mp4"]


def test_a_frozen_server_times_out_and_says_so(link, monkeypatch):
    from cameofarm.storage import StorageUnavailableError

    store = _store(link, monkeypatch, timeout_seconds=0.5, retry_seconds=2)
    link.mode = "frozen"
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"did not answer \(get 'cameos/x'\)"):
        store.get_bytes("cameos/x")
    assert time.monotonic() - started < 60  # bounded: no hang at "publish" for minutes
    link.mode = "up"
    assert not store.exists("cameos/x")


def test_bad_input_is_not_retried(link, monkeypatch):
    from cameofarm.storage import ObjectNotFoundError

    store = _store(link, monkeypatch, timeout_seconds=2, retry_seconds=30)
    before = store.attempts
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("outputs/none.mp4")
    assert store.attempts == before + 1


def test_an_unavailable_store_requeues_the_job_instead_of_failing_it(
    storage, farm_config, cameo_row
):
    """The scheduler tells an infrastructure fault from bad input."""
    from cameofarm.cluster.jobs import JobStatus, dispatch_job, get_job, submit_job
    from cameofarm.storage import StorageUnavailableError

    job = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo_row.id],
        script="Hi.",
        tier="plus",
        customer="tester",
    )
    from cameofarm.cluster.scheduler import Scheduler

    class StoreAway:
        """Stage pools whose replicas cannot reach the object store."""

        def map(self, *_args, **_kwargs):
            raise StorageUnavailableError("the object store at 127.0.0.1:9 did not answer")

        def fetch(self, handles):
            return list(handles)

    scheduler = Scheduler(farm_config, pools=StoreAway(), storage=storage)
    dispatch_job(storage.db, farm_config, job.id)
    scheduler._run(job.id)
    view = get_job(storage.db, job.id)
    assert view.status is JobStatus.QUEUED  # queued again, not FAILED as bad input
    assert view.attempts == 1
    with storage.db.session() as s:
        from cameofarm.storage.db import JobEventRow

        reasons = [e.reason for e in s.query(JobEventRow).filter_by(job_id=job.id)]
    assert any("retrying after" in r and "did not answer" in r for r in reasons)
