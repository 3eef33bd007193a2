"""The object-store contract and its two backends: a local folder and MinIO/S3."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from cameofarm.configs import StorageConfig
from cameofarm.storage.keys import validate_key, validate_prefix

T = TypeVar("T")
log = logging.getLogger("cameofarm.objects")


class ObjectNotFoundError(KeyError):
    """The key does not exist in the store."""


class StorageUnavailableError(RuntimeError):
    """The object store did not answer in time: an infrastructure fault, not bad input.
    The operation changed nothing it reports as done; retrying it later is safe."""


# S3 error codes that mean "try again", not "you asked for something wrong".
_RETRY_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
)


def is_transient(exc: BaseException) -> bool:
    """True for an unreachable, frozen or overloaded server (retry), false for bad input."""
    import urllib3
    from minio.error import S3Error, ServerError

    if isinstance(exc, ServerError | urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, S3Error) and exc.code in _RETRY_CODES


@runtime_checkable
class ObjectStore(Protocol):
    """Flat key → bytes storage for media and cameo assets."""

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> str: ...
    def put_file(self, key: str, path: str | Path, content_type: str = ...) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: str | Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def locate(self, key: str) -> str: ...
    def presign(self, key: str, seconds: int) -> str | None: ...


class LocalObjectStore:
    """Objects as files under one root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"object key {key!r} resolves outside the store")
        return path

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Store data under key, replacing any previous object."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def put_file(
        self, key: str, path: str | Path, content_type: str = "application/octet-stream"
    ) -> str:
        """Copy a local file into the store under key."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes or raise ObjectNotFoundError."""
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return path.read_bytes()

    def get_file(self, key: str, path: str | Path) -> Path:
        """Copy the object to a local path and return it."""
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys that start with prefix, sorted."""
        validate_prefix(prefix)
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def locate(self, key: str) -> str:
        """Return a local filesystem path a person can open."""
        return str(self._path(key))

    def presign(self, key: str, seconds: int) -> str | None:
        """A local folder has no URLs: the HTTP API signs its own download links."""
        return None


class MinioObjectStore:
    """Objects in a MinIO/S3 bucket through the official `minio` client.

    Every request has a connect/read timeout (`timeout_seconds`: a frozen server cannot hang
    a job), and every operation is retried with exponential backoff while the server is
    unreachable or answers 5xx, for up to `retry_seconds`; then it raises
    StorageUnavailableError, which the scheduler treats as an infrastructure fault (the job
    is queued again), never as bad input. S3 writes are atomic: an object is either all there
    or not there.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        timeout_seconds: float = 15.0,
        retry_seconds: float = 120.0,
    ) -> None:
        import certifi
        import urllib3
        from minio import Minio

        self.bucket = bucket
        self.endpoint = endpoint
        self.retry_seconds = retry_seconds
        self.attempts = 0  # requests tried, for tests and logs
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
            retries=urllib3.Retry(total=0, redirect=0),  # retried here, with a deadline
            maxsize=16,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

        def ensure_bucket() -> None:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)

        self._retry("open bucket", bucket, ensure_bucket)

    def _retry(self, what: str, key: str, call: Callable[[], T]) -> T:
        """Run `call`, retrying transient failures with backoff until `retry_seconds`."""
        deadline = time.monotonic() + self.retry_seconds
        delay, tries = 0.2, 0
        while True:
            tries += 1
            self.attempts += 1
            try:
                return call()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                    raise StorageUnavailableError(
                        f"the object store at {self.endpoint} did not answer ({what} {key!r}) "
                        f"for {self.retry_seconds:g} s, {tries} tries; last error: {reason}. "
                        "Check that it is up; work that needed it is retried"
                    ) from None
                log.warning(
                    "object store %s: %s %s failed (%s); retrying",
                    self.endpoint,
                    what,
                    key,
                    type(exc).__name__,
                )
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        name = validate_key(key)
        self._retry(
            "put",
            key,
            lambda: self.client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), content_type=content_type
            ),
        )
        return key

    def put_file(
        self, key: str, path: str | Path, content_type: str = "application/octet-stream"
    ) -> str:
        name = validate_key(key)
        self._retry(
            "put",
            key,
            lambda: self.client.fput_object(
                self.bucket, name, str(path), content_type=content_type
            ),
        )
        return key

    def _missing(self, exc: Exception) -> bool:
        return getattr(exc, "code", "") in ("NoSuchKey", "NoSuchObject", "ResourceNotFound")

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        name = validate_key(key)

        def read() -> bytes:  # the whole body inside the retry: a cut-off read is retried
            try:
                response = self.client.get_object(self.bucket, name)
            except S3Error as exc:
                if self._missing(exc):
                    raise ObjectNotFoundError(key) from exc
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._retry("get", key, read)

    def get_file(self, key: str, path: str | Path) -> Path:
        from minio.error import S3Error

        name = validate_key(key)

        def fetch() -> Path:
            try:
                self.client.fget_object(self.bucket, name, str(path))
            except S3Error as exc:
                if self._missing(exc):
                    raise ObjectNotFoundError(key) from exc
                raise
            return Path(path)

        return self._retry("get", key, fetch)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        name = validate_key(key)

        def stat() -> bool:
            try:
                self.client.stat_object(self.bucket, name)
            except S3Error as exc:
                if self._missing(exc):
                    return False
                raise
            return True

        return self._retry("stat", key, stat)

    def delete(self, key: str) -> None:
        name = validate_key(key)
        self._retry("delete", key, lambda: self.client.remove_object(self.bucket, name))

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)

        def names() -> list[str]:  # listed whole inside the retry, so none is seen twice
            found = self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return [o.object_name for o in found if o.object_name is not None]

        yield from self._retry("list", prefix, names)

    def presign(self, key: str, seconds: int) -> str | None:
        """Return a presigned GET URL valid for `seconds`."""
        return self.client.presigned_get_object(
            self.bucket, validate_key(key), expires=timedelta(seconds=seconds)
        )

    def locate(self, key: str) -> str:
        """Return a presigned GET URL valid for one hour."""
        return self.client.presigned_get_object(
            self.bucket, validate_key(key), expires=timedelta(hours=1)
        )


def open_object_store(config: StorageConfig, data_dir: str | Path) -> ObjectStore:
    """Build the configured store; MinIO credentials come from the environment."""
    if config.kind == "local":
        root = Path(config.root)
        return LocalObjectStore(root if root.is_absolute() else Path(data_dir) / root)
    access = os.environ.get(config.access_key_env)
    secret = os.environ.get(config.secret_key_env)
    if not access or not secret:
        raise RuntimeError(
            f"storage.kind is minio but {config.access_key_env} / {config.secret_key_env} are "
            "not set; export the MinIO access and secret key"
        )
    return MinioObjectStore(
        config.endpoint,
        config.bucket,
        access,
        secret,
        secure=config.secure,
        region=config.region,
        timeout_seconds=config.timeout_seconds,
        retry_seconds=config.retry_seconds,
    )
