"""Object store (local folder or MinIO/S3) and the metadata database."""

from cameofarm.storage.db import Database
from cameofarm.storage.keys import InvalidKeyError, validate_key
from cameofarm.storage.objects import (
    LocalObjectStore,
    MinioObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    open_object_store,
)

__all__ = [
    "Database",
    "InvalidKeyError",
    "LocalObjectStore",
    "MinioObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "open_object_store",
    "validate_key",
]
