"""Object store (local folder or MinIO/S3) and the metadata database."""

from cameofarm.storage.db import Database
from cameofarm.storage.farm import FarmStorage, open_farm_storage
from cameofarm.storage.keys import InvalidKeyError, validate_key
from cameofarm.storage.objects import (
    LocalObjectStore,
    MinioObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    StorageUnavailableError,
    open_object_store,
)

__all__ = [
    "Database",
    "FarmStorage",
    "InvalidKeyError",
    "LocalObjectStore",
    "MinioObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "StorageUnavailableError",
    "open_farm_storage",
    "open_object_store",
    "validate_key",
]
