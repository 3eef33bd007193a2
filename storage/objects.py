"""The object-store contract and its two backends: a local folder and MinIO/S3."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from cameofarm.configs import StorageConfig
from cameofarm.storage.keys import validate_key, validate_prefix


class ObjectNotFoundError(KeyError):
    """The key does not exist in the store."""


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
    """Objects in a MinIO/S3 bucket through the official `minio` client."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        from minio import Minio

        self.bucket = bucket
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        if not self.client.bucket_exists(bucket):
            self.client.make_bucket(bucket)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        self.client.put_object(
            self.bucket, validate_key(key), io.BytesIO(data), len(data), content_type=content_type
        )
        return key

    def put_file(
        self, key: str, path: str | Path, content_type: str = "application/octet-stream"
    ) -> str:
        self.client.fput_object(
            self.bucket, validate_key(key), str(path), content_type=content_type
        )
        return key

    def _missing(self, exc: Exception) -> bool:
        return getattr(exc, "code", "") in ("NoSuchKey", "NoSuchObject", "ResourceNotFound")

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFoundError(key) from exc
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get_file(self, key: str, path: str | Path) -> Path:
        from minio.error import S3Error

        try:
            self.client.fget_object(self.bucket, validate_key(key), str(path))
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFoundError(key) from exc
            raise
        return Path(path)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, validate_key(key))
        except S3Error as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, validate_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        for obj in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
            if obj.object_name is not None:
                yield obj.object_name

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
        config.endpoint, config.bucket, access, secret, secure=config.secure, region=config.region
    )
